"""Evolution of neuromodulatory agents and of evolvable neural units."""
