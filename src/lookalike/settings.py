"""Settings read from the environment (prefix ``LOOKALIKE_``) and, optionally, a config file."""
from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lookalike"


class Settings(BaseSettings):
    """Every knob of the service and the pipeline; env vars win over the config file."""

    model_config = SettingsConfigDict(
        env_prefix="LOOKALIKE_", env_file=os.environ.get("LOOKALIKE_CONFIG"), extra="ignore"
    )

    workspace: Path = Path("workspace")
    store_url: str | None = Field(None, description="SQLAlchemy URL; default: sqlite in the workspace")
    cache_dir: Path = Field(default_factory=default_cache_dir, description="where pretrained weights are looked up")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_upload_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    default_k: int = 10
    max_k: int = 100
    route_threshold: float = Field(0.5, description="min category confidence to search inside the predicted type")
    route_top_types: int = 3
    image_url_timeout: float = 10.0
    allow_image_urls: bool = Field(False, description="let POST /api/search fetch an image_url")
    cors_origins: list[str] = []
    api_keys: list[str] = Field([], description="sha256 hex digests of the keys allowed to write")
    require_key_for_reads: bool = False
    otel: bool = Field(False, description="FastAPI's own OpenTelemetry spans, metrics and logs, when an "
                                          "OpenTelemetry SDK is configured; off, it costs ~5 % of a "
                                          "similar-by-id request to check for one")
    # live catalogue (issue 6): API writes, click feedback
    allow_product_image_urls: bool = Field(True, description="let POST /api/products fetch an image_url "
                                                             "(size- and pixel-capped, http(s) only)")
    index_sync_seconds: float = Field(10.0, description="how long writes collect before the vector files and "
                                                        "the index catch up with the journal")
    follow_writes: bool | None = Field(None, description="replay writes other processes made to the store "
                                                         "before each request (several workers or replicas on "
                                                         "one store); default: on with --workers > 1 or a "
                                                         "PostgreSQL store")
    rerank_weight: float = Field(0.5, ge=0.0, le=1.0, description="share of the click signal in re-ranked "
                                                                   "similar lists (0 = visual order only)")
    rerank_prior_strength: float = Field(20.0, gt=0.0, description="Beta prior strength, in examinations")
    rerank_prior_ctr: float = Field(0.05, gt=0.0, lt=1.0, description="prior click rate until enough events")
    rerank_exploration: float = Field(1.0, ge=0.0, description="UCB bonus, in posterior standard deviations")
    rerank_position_eta: float = Field(1.0, ge=0.0, description="examination propensity (1 + position)^-eta")

    def follows_writes(self, store_dialect: str) -> bool:
        """Whether this process replays other processes' writes (``follow_writes``, resolved)."""
        if self.follow_writes is not None:
            return self.follow_writes
        return self.workers > 1 or store_dialect == "postgresql"
