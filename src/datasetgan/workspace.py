"""A DatasetGAN workspace: one folder per labelling project.

    DIR/datasetgan.yaml     generator reference, classes (name + colour), settings
    DIR/candidates/         NNNNNN.png per sampled seed + latents.safetensors (seeds, ws, and for a
                            conditional generator each candidate's class)
    DIR/annotations/        NNNNNN.png index masks (0..C-1, 255 = ignore)
    DIR/interpreter/        the trained style interpreter
    DIR/parts/              discovered parts: k-means on generator features, and their classes
    DIR/datasets/NAME/      generated datasets

A candidate's id is its seed, zero-padded to six digits: the image, its w latent and its
annotation are tied together by that id, and the generator reproduces the image from it.
"""

import re
from pathlib import Path
from typing import Literal, Sequence

import torch
import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from safetensors import safe_open

from datasetgan.errors import DatasetGANError, summarize
from datasetgan.fileio import atomic_write, save_tensors
from datasetgan.formats.masks import save_image
from datasetgan.labels import LabelClass

CONFIG_NAME = "datasetgan.yaml"
CANDIDATE_ID = re.compile(r"^[0-9]{6,10}$")
NO_CONDITION = -1  # in latents.safetensors' conditions: a candidate drawn without a class


class ClassSpec(BaseModel):
    """A class as the config file spells it; checked as a `LabelClass` (the one check of a class)."""

    name: str
    color: tuple[int, int, int]

    @model_validator(mode="after")
    def _valid(self) -> "ClassSpec":
        try:
            LabelClass(self.name, self.color)
        except DatasetGANError as exc:
            raise ValueError(str(exc)) from exc
        return self


NoiseMode = Literal["const", "per_sample"]


class SamplingSettings(BaseModel):
    psi: float = 0.7  # truncation, as the paper's release samples
    truncation_cutoff: int | None = Field(None, ge=1)  # None: all w slots; the paper's StyleGAN1 used 8
    # const: every sample gets the generator's stored noise; per_sample: noise drawn from each
    # sample's seed (candidate id), as the paper's release draws it
    noise: NoiseMode = "const"

    def noise_ids(self, ids: Sequence[int | str]) -> list[int] | None:
        """What `Generator.synthesize` gets as noise ids for these seeds or candidate ids."""
        return [int(i) for i in ids] if self.noise == "per_sample" else None


class FeatureSettings(BaseModel):
    resolution: int | None = None  # hypercolumn grid; None: the image size, capped at max_resolution
    max_resolution: int = 512  # the paper labels 1024 px faces from 512 px features
    # store annotated pyramids in float16: half the memory, probabilities within ~3e-4 of float32;
    # None: on for generators of 512 px and up, where memory is what limits a laptop
    half_precision: bool | None = None

    def resolve(self, image_resolution: int) -> int:
        return self.resolution or min(image_resolution, self.max_resolution)

    def storage_dtype(self, image_resolution: int) -> torch.dtype:
        half = self.half_precision if self.half_precision is not None else image_resolution >= 512
        return torch.float16 if half else torch.float32


class WorkspaceConfig(BaseModel):
    generator: str
    classes: list[ClassSpec] = Field(min_length=2)
    sampling: SamplingSettings = SamplingSettings()
    features: FeatureSettings = FeatureSettings()
    interpreter: dict = Field(default_factory=dict, description="InterpreterConfig overrides")

    @field_validator("classes")
    @classmethod
    def _unique(cls, classes: list[ClassSpec]) -> list[ClassSpec]:
        names = [c.name for c in classes]
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        if len(classes) > 255:
            raise ValueError("at most 255 classes (255 is the ignore id)")
        return classes


def candidate_id(seed: int) -> str:
    return f"{seed:06d}"


class Workspace:
    """Paths and config of one workspace folder; every path a client names goes through here."""

    def __init__(self, root: str | Path, config: WorkspaceConfig):
        self.root, self.config = Path(root), config

    # ---- creating and opening --------------------------------------------------------

    @classmethod
    def init(cls, root: str | Path, generator: str, classes: Sequence[LabelClass | ClassSpec], **settings
             ) -> "Workspace":
        root = Path(root)
        if (root / CONFIG_NAME).exists():
            raise DatasetGANError(f"{root} is already a workspace ({CONFIG_NAME} exists)")
        try:
            specs = [{"name": c.name, "color": tuple(c.color)} for c in classes]
            config = WorkspaceConfig(generator=generator, classes=specs, **settings)
        except ValidationError as exc:
            raise DatasetGANError(f"invalid workspace settings: {summarize(exc)}") from exc
        workspace = cls(root, config)
        try:
            for folder in (workspace.candidates_dir, workspace.annotations_dir, workspace.datasets_dir):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatasetGANError(f"cannot create workspace {root}: {exc.strerror or exc}") from exc
        workspace.save_config()
        return workspace

    @classmethod
    def open(cls, root: str | Path) -> "Workspace":
        path = Path(root) / CONFIG_NAME
        if not path.is_file():
            raise DatasetGANError(f"{root} is not a workspace (no {CONFIG_NAME}): create one with `datasetgan init`")
        try:
            config = WorkspaceConfig.model_validate(yaml.safe_load(path.read_text()))
        except yaml.YAMLError as exc:
            raise DatasetGANError(f"{path} is not valid YAML: {exc}") from exc
        except ValidationError as exc:
            raise DatasetGANError(f"{path} is invalid: {summarize(exc)}") from exc
        return cls(root, config)

    def save_config(self) -> None:
        text = yaml.safe_dump(self.config.model_dump(mode="json"), sort_keys=False)
        atomic_write(self.root / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text))

    # ---- layout ----------------------------------------------------------------------

    @property
    def candidates_dir(self) -> Path:
        return self.root / "candidates"

    @property
    def annotations_dir(self) -> Path:
        return self.root / "annotations"

    @property
    def interpreter_dir(self) -> Path:
        return self.root / "interpreter"

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def parts_dir(self) -> Path:
        """Unsupervised part discovery: the k-means model and the cluster -> class mapping."""
        return self.root / "parts"

    @property
    def latents_path(self) -> Path:
        return self.candidates_dir / "latents.safetensors"

    @property
    def label_classes(self) -> list[LabelClass]:
        return [LabelClass(c.name, tuple(c.color)) for c in self.config.classes]

    @property
    def num_classes(self) -> int:
        return len(self.config.classes)

    def check_id(self, cid: str) -> str:
        """A candidate id from outside (CLI, browser) must be digits only and exist."""
        if not isinstance(cid, str) or not CANDIDATE_ID.match(cid):
            raise DatasetGANError(f"invalid candidate id {cid!r}: ids are 6-10 digits (the seed)")
        if not self.candidate_image(cid).is_file():
            raise DatasetGANError(f"unknown candidate {cid}: no {self.candidate_image(cid)}")
        return cid

    def candidate_image(self, cid: str) -> Path:
        return self.candidates_dir / f"{cid}.png"

    def annotation_path(self, cid: str) -> Path:
        return self.annotations_dir / f"{cid}.png"

    # ---- candidates ------------------------------------------------------------------

    def read_latents(self) -> tuple[list[int], torch.Tensor | None]:
        """(seeds, ws [N, num_ws, w_dim]) of every candidate, in sampling order."""
        if not self.latents_path.is_file():
            return [], None
        with safe_open(str(self.latents_path), "pt") as handle:
            return handle.get_tensor("seeds").tolist(), handle.get_tensor("ws")

    def read_conditions(self) -> dict[str, int]:
        """The class each candidate of a conditional generator was drawn for (id -> class)."""
        if not self.latents_path.is_file():
            return {}
        with safe_open(str(self.latents_path), "pt") as handle:
            if "conditions" not in handle.keys():
                return {}
            seeds, conditions = handle.get_tensor("seeds").tolist(), handle.get_tensor("conditions").tolist()
        return {candidate_id(s): c for s, c in zip(seeds, conditions) if c != NO_CONDITION}

    def candidate_ids(self) -> list[str]:
        return [candidate_id(s) for s in self.read_latents()[0]]

    def annotated_ids(self) -> list[str]:
        known = set(self.candidate_ids())
        return sorted(p.stem for p in self.annotations_dir.glob("*.png") if p.stem in known)

    def ws_for(self, ids: Sequence[str]) -> torch.Tensor:
        seeds, ws = self.read_latents()
        index = {candidate_id(s): i for i, s in enumerate(seeds)}
        missing = [i for i in ids if i not in index]
        if missing:
            raise DatasetGANError(f"no stored latent for candidate(s) {', '.join(missing)}")
        return ws[[index[i] for i in ids]]

    def add_candidates(self, seeds: Sequence[int], ws: torch.Tensor, images_uint8: torch.Tensor,
                       condition: int | None = None) -> list[str]:
        """Store new candidates (images [N,3,H,W] uint8 with their ws, and the class a conditional
        generator drew them for); known seeds are skipped."""
        old_seeds, old_ws = self.read_latents()
        old_conditions = self.read_conditions()
        known = set(old_seeds)
        fresh = [i for i, s in enumerate(seeds) if s not in known]
        for i in fresh:
            save_image(self.candidate_image(candidate_id(seeds[i])), images_uint8[i].permute(1, 2, 0).cpu().numpy())
        all_seeds = old_seeds + [seeds[i] for i in fresh]
        new_ws = ws[fresh].float().cpu()
        all_ws = new_ws if old_ws is None else torch.cat([old_ws, new_ws])
        tensors = {"seeds": torch.tensor(all_seeds, dtype=torch.int64), "ws": all_ws.contiguous()}
        if old_conditions or condition is not None:
            new = NO_CONDITION if condition is None else condition
            tensors["conditions"] = torch.tensor([old_conditions.get(candidate_id(s), NO_CONDITION) for s in old_seeds]
                                                 + [new] * len(fresh), dtype=torch.int64)
        meta = {"generator": self.config.generator, "psi": str(self.config.sampling.psi)}
        save_tensors(self.latents_path, tensors, meta)
        return [candidate_id(seeds[i]) for i in fresh]
