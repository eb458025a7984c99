"""The model side: loading models (models), sampling with behaviour log-probs (generation, vllm_rollout) and the
batch that flows between the actors (experience)."""
