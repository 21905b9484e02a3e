"""Neuromodulation mechanisms as Keras layers.

* Weight-space task switching through a fixed transform (`switching`).
* Neuromodulated Hebbian plasticity, Backpropamine (`plastic`).
* The evolvable neural unit, ENU (`enu`).
"""
