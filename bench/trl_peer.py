"""TRL's RLOOTrainer and GRPOTrainer driven one optimiser step at a time, so they interleave with xrlhf steps.

`trainer.train()` runs unchanged in a thread; a callback holds each step at its start until `__call__` lets it
go and reports the seconds from `on_step_begin` to `on_step_end`, which cover TRL's generation, its log-prob
passes, the reward function, backward and the optimiser step.
"""
from __future__ import annotations

import queue
import tempfile
import threading
import time
from typing import Any

import torch
from transformers import TrainerCallback

from common import Shape, batch_prompts
from work_counter import WorkCounter


class _StepGate(TrainerCallback):
    def __init__(self) -> None:
        self.go = threading.Semaphore(0)
        self.at_gate = threading.Event()
        self.done: queue.Queue = queue.Queue()
        self.t0 = self.c0 = 0.0
        self.counter: WorkCounter | None = None
        self.w0: dict[str, int] = {}

    def on_step_begin(self, args, state, control, **kw):
        self.at_gate.set()
        self.go.acquire()
        self.w0 = self.counter.snapshot()
        self.t0, self.c0 = time.perf_counter(), time.thread_time()

    def on_step_end(self, args, state, control, **kw):  # runs in the trainer's thread, like on_step_begin
        wall, cpu = time.perf_counter() - self.t0, time.thread_time() - self.c0
        self.done.put((wall, cpu, self.counter.since(self.w0)))


def reward_function(judge: Any):
    """The xrlhf judge as a TRL reward function: (prompts, completions) -> one float per completion."""
    def text(x: Any) -> str:
        return x if isinstance(x, str) else x[-1]["content"]  # conversational: a list of messages

    def judge_reward(prompts: list, completions: list, **kw: Any) -> list[float]:
        judgements = judge.score([text(p) for p in prompts], [text(c) for c in completions])
        return [float("nan") if j.reward is None else j.reward for j in judgements]

    return judge_reward


class TrlStep:
    """One TRL trainer ('rloo' or 'grpo') on the same model, prompts, batch, response length and reward as xrlhf."""

    def __init__(self, kind: str, shape: Shape, cfg: Any, prompts: list[str], judge: Any, steps: int, threads: int):
        from datasets import Dataset
        from peft import LoraConfig

        self.out = tempfile.mkdtemp(prefix=f"trl-{kind}-")
        model, tokenizer = _model_and_tokenizer(shape, self.out)
        texts = [batch_prompts(prompts, i, shape.prompts) for i in range(steps)]
        flat = [p for block in texts for p in block]
        if tokenizer.chat_template:  # let TRL apply the chat template, as xrlhf's format_prompt does
            rows = [[{"role": "user", "content": p}] for p in flat]
        else:
            from xrlhf.data import PLAIN_TEMPLATE

            rows = [PLAIN_TEMPLATE.format(prompt=p) for p in flat]
        args = dict(output_dir=self.out, max_steps=steps, per_device_train_batch_size=shape.batch,
                    gradient_accumulation_steps=1, num_generations=shape.samples,
                    max_completion_length=shape.new_tokens,
                    generation_kwargs={"min_new_tokens": shape.new_tokens},
                    temperature=cfg.rollout.temperature, top_p=1.0, top_k=0, beta=cfg.algorithm.kl_coef,
                    learning_rate=cfg.algorithm.lr, max_grad_norm=cfg.algorithm.max_grad_norm,
                    use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False, shuffle_dataset=False,
                    report_to="none", save_strategy="no", logging_steps=10**6, disable_tqdm=True,
                    seed=cfg.seed, disable_dropout=True, dataloader_num_workers=0)
        lora = cfg.model.lora
        peft = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=lora.target_modules, task_type="CAUSAL_LM") if lora.enabled else None
        if kind == "rloo":
            from trl import RLOOConfig as Args, RLOOTrainer as Trainer
        else:
            from trl import GRPOConfig as Args, GRPOTrainer as Trainer
        self.gate = _StepGate()
        self.trainer = Trainer(model=model, reward_funcs=reward_function(judge), args=Args(**args),
                               train_dataset=Dataset.from_dict({"prompt": rows}), processing_class=tokenizer,
                               callbacks=[self.gate], peft_config=peft)
        self.gate.counter = self.counter = WorkCounter([self.trainer.model, self.trainer.ref_model])
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._train, args=(threads,), daemon=True)
        self.thread.start()
        # Held until the trainer waits at its first step: a second trainer's Accelerator, built meanwhile, would
        # reset the process-wide AcceleratorState under this one's train() set-up.
        while not self.gate.at_gate.wait(0.1) and not self.error:
            pass

    def _train(self, threads: int) -> None:
        torch.set_num_threads(threads)  # a thread's intra-op pool does not inherit the main thread's setting
        try:
            self.trainer.train()
        except BaseException as exc:  # handed to the main thread by __call__
            self.error.append(exc)
            self.gate.done.put(None)
            self.gate.at_gate.set()

    def __call__(self) -> dict[str, Any]:
        self.gate.go.release()
        done = self.gate.done.get()
        if done is None:
            raise RuntimeError("TRL trainer failed") from self.error[0]
        return {"step": done[0], "step_cpu": done[1], "work": done[2]}


def _model_and_tokenizer(shape: Shape, workdir: str) -> tuple[str, Any]:
    """A path TRL can load the policy (and, without LoRA, its reference copy) from, and the tokenizer."""
    from transformers import AutoTokenizer

    from xrlhf.policy.models import build_tiny_model, packaged_model_dir

    if shape.model == "gemma":
        path = str(packaged_model_dir())
        return path, AutoTokenizer.from_pretrained(path, padding_side="left")
    model, tokenizer = build_tiny_model()
    model.save_pretrained(workdir + "/tiny")
    return workdir + "/tiny", tokenizer

