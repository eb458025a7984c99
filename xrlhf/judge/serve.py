"""`xrlhf serve-judge`: the local judge model behind an OpenAI-compatible completions API on Ray Serve."""
# No `from __future__ import annotations` here: through serve.ingress FastAPI would see the request
# body's type as a string and read it as a query parameter.
import asyncio
import hashlib
import hmac
import logging
import os
import time
import uuid
from typing import Any

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel, Field
from ray import serve

from xrlhf.config import Config, ConfigError
from xrlhf.exposure import (ExposureError, auth_disabled, beyond_loopback, report_outside_listeners,
                            require_auth_or_opt_in, start_local_ray)
from xrlhf.judge.completions import MAX_TOP_LOGPROBS, CompletionJob, complete_batch

log = logging.getLogger(__name__)

APP_NAME = "xrlhf-judge"
MAX_BATCH = 16
_state = {"started_ray": False}  # whether start_judge_server started Ray, so stop shuts it down again

app = FastAPI(title="xrlhf judge", description="OpenAI legacy-completions subset over the local judge model")


class CompletionRequest(BaseModel):
    """The part of an OpenAI `POST /v1/completions` body this server honours."""

    model: str | None = None
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1, le=1024)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False  # with logprobs: the prompt's own token log-probs first (judge.mode=likelihood over HTTP)


@serve.deployment(max_ongoing_requests=2 * MAX_BATCH)
@serve.ingress(app)
class JudgeServer:
    """One replica: the judge model, its tokenizer, and batched first-token logprobs / short generations."""

    def __init__(self, model: str, dtype: str, load_in_4bit: bool, cache_dir: str | None, served_name: str,
                 token_sha256: str | None, torch_threads: int | None) -> None:
        import torch

        from xrlhf.policy.models import load_causal_lm

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.model, self.tokenizer = load_causal_lm(model, dtype, load_in_4bit, cache_dir)
        self.served_name = served_name
        # Only the token's digest crosses into Ray (actor arguments are stored in the cluster's metadata).
        self.token_sha256 = token_sha256

    @app.get("/health")
    def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models(self, authorization: str | None = Header(None)) -> dict[str, Any]:
        self._authorise(authorization)
        return {"object": "list", "data": [{"id": self.served_name, "object": "model", "owned_by": "xrlhf"}]}

    @app.post("/v1/completions")
    async def completions(self, body: CompletionRequest, authorization: str | None = Header(None)) -> dict[str, Any]:
        self._authorise(authorization)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise HTTPException(400, "prompt must not be an empty list")
        jobs = [CompletionJob(p, body.max_tokens, body.temperature, body.logprobs, body.echo) for p in prompts]
        choices = await asyncio.gather(*(self._complete(job) for job in jobs))
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": body.model or self.served_name,
                "choices": [{"index": i, **c} for i, c in enumerate(choices)]}

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=0.01)
    async def _complete(self, jobs: list[CompletionJob]) -> list[dict[str, Any]]:
        # In a thread: the event loop keeps taking requests for the next batch meanwhile.
        return await asyncio.to_thread(complete_batch, self.model, self.tokenizer, jobs)

    def _authorise(self, authorization: str | None) -> None:
        if self.token_sha256 is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        given = hashlib.sha256(token.encode()).hexdigest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, self.token_sha256):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


def _token_sha256(cfg: Config) -> str | None:
    name = cfg.judge.serve.auth_token_env
    if name is None:
        return None
    token = os.environ.get(name)
    if not token:
        # Refuse rather than serve without the auth the config asked for.
        raise ConfigError(f"judge.serve.auth_token_env names {name!r}, but that environment variable is not set")
    return hashlib.sha256(token.encode()).hexdigest()


def _init_ray(cfg: Config) -> None:
    import ray

    if ray.is_initialized():
        return
    res = cfg.resources
    if res.address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=res.address)
    else:
        start_local_ray(num_cpus=res.num_cpus, num_gpus=res.num_gpus, include_dashboard=False,
                        dashboard_host=res.dashboard_host)
    _state["started_ray"] = True


def start_judge_server(cfg: Config, blocking: bool = False) -> str:
    """Deploy the judge on Ray Serve at judge.serve.host:port; returns the base URL for judge.http.base_url.

    The model is judge.model (None: model.name), loaded as the local HFJudge loads it. With
    blocking=True this only returns after Ctrl-C (the server is then stopped).
    """
    s, j = cfg.judge.serve, cfg.judge
    token_sha256 = _token_sha256(cfg)
    if token_sha256 is None and beyond_loopback(s.host):
        if not cfg.resources.allow_unauthenticated_cluster:
            raise ExposureError(f"judge.serve.host = {s.host} serves the judge beyond 127.0.0.1 with no bearer token: "
                                f"set judge.serve.auth_token_env to the name of an environment variable holding one, "
                                f"or keep judge.serve.host=127.0.0.1, or, on a trusted private network only, set "
                                f"resources.allow_unauthenticated_cluster=true")
        log.warning("the judge's HTTP port on %s answers without a token, as "
                    "resources.allow_unauthenticated_cluster=true allows", s.host)
    allowed = cfg.resources.allow_unauthenticated_cluster
    what = "Ray Serve (its replicas' gRPC servers bind [::])"
    require_auth_or_opt_in(what, allowed)  # before anything starts
    _init_ray(cfg)
    require_auth_or_opt_in(what, allowed)  # a cluster joined by address has its own mode
    serve.start(http_options={"host": s.host, "port": s.port})
    res = cfg.resources.judge
    deployment = JudgeServer.options(num_replicas=s.num_replicas,
                                     ray_actor_options={"num_cpus": res.num_cpus, "num_gpus": res.num_gpus})
    serve.run(deployment.bind(j.model or cfg.model.name, j.dtype, j.load_in_4bit, cfg.model.cache_dir, j.http.model,
                              token_sha256, res.torch_threads),
              name=APP_NAME, route_prefix="/")
    host = "127.0.0.1" if s.host in ("0.0.0.0", "::") else s.host
    url = f"http://{host}:{s.port}/v1"
    log.info("judge %s served at %s (auth %s)", j.model or cfg.model.name, url, "on" if token_sha256 else "off")
    if auth_disabled():
        report_outside_listeners()
    if blocking:
        _block_until_interrupt()
    return url


def _block_until_interrupt() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        log.info("stopping the judge server")
    finally:
        stop_judge_server()


def stop_judge_server() -> None:
    """Shut Serve down, and Ray too when start_judge_server started it."""
    import ray

    if not ray.is_initialized():
        return
    serve.shutdown()
    if _state["started_ray"]:
        ray.shutdown()
        _state["started_ray"] = False


def serve_judge_main(cfg: Config) -> None:
    """`xrlhf serve-judge`: serve until Ctrl-C."""
    url = start_judge_server(cfg, blocking=False)
    print(f"judge serving OpenAI completions at {url} (Ctrl-C to stop)", flush=True)
    _block_until_interrupt()
