"""``grace ablate``'s settings in groups, one per kind of stage, read from its flags once and checked there.

:class:`~grace.experiments.configs.AblateConfig` is the flat command line (every flag, as users type it, and what
``ablation_config.json`` records); :func:`ablation_settings` turns it into an :class:`AblationSettings` whose
groups map onto the stages' settings — data (the data stage), identifiers (features, ids, tries), training
(shards' consumer: the training stage), evaluation (pseudo-queries, baselines, the query sets, beams), hybrid,
publish — with the ``KEY=VALUE`` flags (``--scheme-overrides``, ``--train-overrides``, ``--pseudo-queries``)
parsed into typed fields: a typo or a bad value is an error before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grace.config import key_values
from grace.errors import GraceError
from grace.experiments.configs import BASELINES, CONTROLS, HYBRID_KINDS, SCHEMES, AblateConfig, split_seed
from grace.infer.evaluate import DEFAULT_KS

#: scheme settings only ``rq`` reads (other schemes in the same ablation ignore them)
RQ_SETTINGS = ("levels", "codebook", "reserve_first", "embedding")
RQ_EMBEDDINGS = ("features", "clip_faiss")


@dataclass(frozen=True)
class DataSettings:
    """The data stage: a built-in benchmark (``benchmark``, ``limit``) or the user's ``dataset``, split by
    ``split_seed`` (group-aware by ``group_by`` for the user's)."""

    dataset: Path | None
    image_root: Path | None
    benchmark: str
    limit: int
    split_seed: int
    group_by: str


@dataclass(frozen=True)
class IdentifierSettings:
    """The features, ids and tries: which ``schemes``, the image ``encoder``, the ids' base ``tokenizer`` and the
    scheme settings (SchemeConfig fields, typed)."""

    schemes: tuple[str, ...]
    encoder: str
    tokenizer: str
    scheme_settings: dict[str, Any] = field(default_factory=dict)

    def of(self, scheme: str) -> dict[str, Any]:
        """The settings ``scheme`` reads (the rq-only ones dropped for the others)."""
        return {k: v for k, v in self.scheme_settings.items() if scheme == "rq" or k not in RQ_SETTINGS}

    @property
    def rq_embedding(self) -> str:
        return self.scheme_settings.get("embedding", "features")


@dataclass(frozen=True)
class TrainingSettings:
    """The training stage: the model and its optimisation, the visual input (``vision_space``, ``query_mix``,
    ``i2id_views``), the extra TrainConfig fields (typed) and the extra training ``seeds``."""

    model: str
    steps: int
    lr: float
    batch_size_i2id: int
    batch_size_t2id: int
    nproc: int
    i2id_views: int
    vision_space: str
    query_mix: float
    overrides: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = ()


@dataclass(frozen=True)
class EvaluationSettings:
    """What every row is scored on and against: the protocol and its pseudo-queries (generator and typed options),
    the baselines, the query sets (``select_on``, ``natural_queries``, ``max_queries``) and the beams."""

    protocol: str
    pseudo_query_generator: str
    pseudo_query_options: dict[str, Any]
    baselines: tuple[str, ...]
    select_on: str
    natural_queries: Path | None
    max_queries: int
    num_beams: int


@dataclass(frozen=True)
class HybridSettings:
    """The hybrid rows: the re-scoring baselines (``kinds``), the candidates re-scored (``depth``), the fusion and
    the candidate pools chosen among on val."""

    kinds: tuple[str, ...]
    depth: int
    fusion: str
    pools: tuple[str, ...]


@dataclass(frozen=True)
class PublishSettings:
    folder: Path | None
    name: str


@dataclass(frozen=True)
class AblationSettings:
    """Every setting of one ablation, grouped; ``seed`` seeds the run (and the split unless ``--split-seed``),
    ``force`` names the stages to rebuild."""

    run: Path
    seed: int
    force: tuple[str, ...]
    data: DataSettings
    identifiers: IdentifierSettings
    training: TrainingSettings
    evaluation: EvaluationSettings
    hybrid: HybridSettings
    publish: PublishSettings


def ablation_settings(config: AblateConfig) -> AblationSettings:
    """The grouped, typed and checked settings of ``config`` (one-line errors for what cannot run)."""
    from grace.data_process.protocol import get_protocol
    from grace.experiments.publish import check_publish_name
    from grace.experiments.query_sets import check_select_on
    from grace.identifiers.schemes import SchemeConfig
    from grace.train import TrainConfig

    unknown = sorted(set(config.schemes) - set(SCHEMES))
    if unknown:
        raise GraceError(f"unknown identifier schemes {unknown}; known: {list(SCHEMES)}")
    protocol = get_protocol(config.protocol)  # an unknown protocol or a generator it refuses fails first
    protocol.check_generator(config.pseudo_query_generator or protocol.default_generator)
    if config.group_by and config.dataset is None:
        raise GraceError("--group-by re-splits your own --dataset; the built-in benchmarks are split by groups already")
    check_select_on(config.select_on)
    check_vision_space(config.vision_space, config.query_mix)
    check_publish_name(config.publish_name)
    scheme_settings = key_values(config.scheme_overrides, "--scheme-overrides", SchemeConfig)
    check_rq_embedding(scheme_settings.get("embedding", "features"))
    overrides = key_values(config.train_overrides, "--train-overrides", TrainConfig)
    baselines = baselines_to_score(config.baselines, protocol)
    hybrid = HybridSettings(tuple(config.hybrid), config.hybrid_depth, config.hybrid_fusion, tuple(config.hybrid_pools))
    check_hybrid(hybrid, baselines, config.select_on)
    return AblationSettings(
        run=Path(config.run), seed=config.seed, force=force_patterns(config.force),
        data=DataSettings(config.dataset, config.image_root, config.benchmark, config.limit, split_seed(config),
                          config.group_by),
        identifiers=IdentifierSettings(tuple(config.schemes), config.encoder, config.tokenizer, scheme_settings),
        training=TrainingSettings(config.model, config.steps, config.lr, config.batch_size_i2id,
                                  config.batch_size_t2id, config.nproc, config.i2id_views, config.vision_space,
                                  config.query_mix, overrides, tuple(dict.fromkeys(config.training_seeds))),
        evaluation=EvaluationSettings(config.protocol, config.pseudo_query_generator,
                                      key_values(config.pseudo_queries, "--pseudo-queries"), tuple(baselines),
                                      config.select_on, config.natural_queries, config.max_queries, config.num_beams),
        hybrid=hybrid, publish=PublishSettings(config.publish, config.publish_name))


def check_rq_embedding(embedding: str) -> None:
    """A one-line error for an embedding ``rq`` cannot quantise."""
    if embedding not in RQ_EMBEDDINGS:
        raise GraceError(f"--scheme-overrides embedding {embedding!r}: use {' or '.join(map(repr, RQ_EMBEDDINGS))}")


def force_patterns(force) -> tuple[str, ...]:
    """``--force`` as stage names: ``True`` (or the flag alone) = every stage, ``False`` = none."""
    if isinstance(force, bool):
        return ("all",) if force else ()
    return tuple(force)


def baselines_to_score(names: list[str], protocol) -> list[str]:
    """The baselines asked for (the controls, bm25 and sibling, are always scored apart; 'none' = none) plus,
    under a protocol that ``expand_documents``, each one's ``_expanded`` twin: the same information for every
    retriever."""
    baselines = [b for b in names if b not in ("none", *CONTROLS)]
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise GraceError(f"unknown baselines {unknown}; known: {list(BASELINES)}")
    if protocol.expand_documents:
        baselines += [f"{b}_expanded" for b in baselines if f"{b}_expanded" in BASELINES
                      and f"{b}_expanded" not in baselines]
    return baselines


def check_hybrid(hybrid: HybridSettings, baselines: list[str], select_on: str) -> None:
    """One-line errors for ``--hybrid`` kinds that cannot re-score candidates or are not built in this run."""
    from grace.fusion import FUSIONS, POOLS

    for kind in hybrid.kinds:
        if kind not in HYBRID_KINDS:
            raise GraceError(f"--hybrid {kind}: only {', '.join(HYBRID_KINDS)} can re-score the generative "
                             "candidates")
        if kind not in baselines:
            raise GraceError(f"--hybrid {kind} re-scores with the {kind} baseline: add it to --baselines")
    if hybrid.kinds and select_on != "val":
        raise GraceError("--hybrid chooses its fusion weight on val: it needs --select-on val")
    if hybrid.fusion not in FUSIONS:
        raise GraceError(f"--hybrid-fusion {hybrid.fusion!r}: known {', '.join(FUSIONS)}")
    unknown = sorted(set(hybrid.pools) - set(POOLS))
    if unknown or not hybrid.pools:
        raise GraceError(f"--hybrid-pools {' '.join(unknown) or '(none)'}: choose among {', '.join(POOLS)}")
    if hybrid.kinds and hybrid.depth < max(DEFAULT_KS):
        raise GraceError(f"--hybrid-depth {hybrid.depth} is below the largest K ({max(DEFAULT_KS)}) it is scored at")


def check_vision_space(vision_space: str, query_mix: float) -> None:
    """One-line errors for an unknown space or a mix it cannot apply."""
    from grace.experiments.joint_space import VISION_SPACES

    if vision_space not in VISION_SPACES:
        raise GraceError(f"--vision-space {vision_space!r}: known {', '.join(VISION_SPACES)}")
    if not 0.0 <= query_mix <= 1.0:
        raise GraceError(f"--query-mix must be in [0, 1] (got {query_mix})")
    if query_mix and vision_space == "features":
        raise GraceError("--query-mix mixes a text's joint-space embedding with its image's: it needs "
                         "--vision-space clip_faiss")
