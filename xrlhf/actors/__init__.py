"""The Ray actors of the graph: rollout, reference, judge and learner, each a thin shell over library code.

xrlhf.driver.graph creates them; the top-level `actors` package re-exports them for the design card's layout.
"""
