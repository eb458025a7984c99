"""The driver: the training loop (controller), one step over the roles (step), the Ray graph that runs them
(graph), what a step writes (metrics, validation) and where (rundir).

step.py sits below actors/ (it holds the typed results the actors return); the rest sits above them.
"""
