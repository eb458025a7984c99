import torch

from xrlhf.policy.experience import Experience


def _experience() -> Experience:
    return Experience(
        input_ids=torch.arange(12).reshape(3, 4),
        attention_mask=torch.ones(3, 4),
        response_mask=torch.tensor([[1, 1], [1, 0], [1, 1]]),
        behaviour_logprobs=torch.tensor([[-0.1, -0.2], [-0.3, 0.0], [-0.5, -0.6]]),
        prompts=["a", "a", "b"],
        responses=["x", "y", "z"],
        group_ids=[0, 0, 1],
        policy_version=7,
        scores=[{"j": 1.0}, {"j": None}, {"j": 0.5}],
        rewards=torch.tensor([1.0, float("nan"), 0.5]),
    )


def test_experience_select_and_to():
    exp = _experience()
    assert exp.response_len == 2
    kept = exp.select([2, 0])
    assert kept.responses == ["z", "x"] and kept.group_ids == [1, 0] and kept.policy_version == 7
    assert kept.scores == [{"j": 0.5}, {"j": 1.0}]
    assert torch.equal(kept.input_ids, torch.tensor([[8, 9, 10, 11], [0, 1, 2, 3]]))
    assert torch.equal(kept.rewards, torch.tensor([0.5, 1.0]))
    assert kept.ref_logprobs is None
    moved = exp.to("cpu")
    assert moved.input_ids.device.type == "cpu" and moved.prompts == exp.prompts
