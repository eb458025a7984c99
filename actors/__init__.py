"""The graph's Ray actors, by role: the design card's top-level name for xrlhf.actors (where they live)."""
from xrlhf.actors.judge import JudgeActor
from xrlhf.actors.learner import LearnerActor
from xrlhf.actors.reference import ReferenceActor
from xrlhf.actors.rollout import RolloutActor

__all__ = ["JudgeActor", "LearnerActor", "ReferenceActor", "RolloutActor"]
