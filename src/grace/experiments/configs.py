"""Dataclass configs of the experiment floor's subcommands (light imports: the CLI builds flags from them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from grace.config import IMAGE_ROOT_HELP
from grace.data_process.protocol import DEFAULT_PROTOCOL
from grace.identifiers.idmap import SCHEME_MODES

#: every identifier scheme (GRACE's five, then rq); the five are what ``grace ablate`` runs by default
SCHEMES = tuple(SCHEME_MODES)
DEFAULT_SCHEMES = SCHEMES[:5]
#: the baselines; each ``*_expanded`` one indexes every image with the run's pseudo-queries for it too
#: (document expansion), so it is given what the generative rows are given: scored by default under a
#: protocol whose pseudo-queries are the images' own metadata (``tagged``)
BASELINES = ("clip_faiss", "late_interaction", "clip_faiss_expanded", "late_interaction_expanded")
DEFAULT_BASELINES = ("clip_faiss", "late_interaction")
#: the controls every table scores beside ``random``: word matching over the pseudo-queries (bm25) and the
#: no-training lookup of a training neighbour (sibling); a generative row must beat both
CONTROLS = ("bm25", "sibling")
#: baselines that can re-score generative candidates (``grace.retriever.Rescorer``): ``grace ablate --hybrid``
HYBRID_KINDS = ("clip_faiss", "clip_faiss_expanded")
BENCHMARKS = ("emoji", "openclipart")
COMPILE_HELP = {"help": "torch.compile the decode step (CUDA graphs; a CUDA device only, eager elsewhere)"}
TRUST_HELP = {"help": "let a generative export's LM config run its own code (transformers' trust_remote_code); "
                      "only this flag allows it, never a file"}


@dataclass
class EvalConfig:
    """Score retrievers (``KIND:PATH``) on the held-out queries of a dataset split."""

    dataset: Path = field(default=Path("runs/emoji/data/dataset.json"), metadata={"help": "Karpathy-form dataset.json"})
    image_root: Path | None = field(default=None, metadata=IMAGE_ROOT_HELP)
    m2kr: str = field(default="", metadata={
        "help": "instead of --dataset: an M2KR source (the hub id BByrneLab/multi_task_multi_modal_knowledge_"
                "retrieval_benchmark_M2KR or a folder in its layout); retrievers are passage indexes of --m2kr-task"})
    checkpoints: Path | None = field(default=None, metadata={
        "help": "instead of --retriever: RUN/ckpt/<scheme>, every saved checkpoint of that training scored on the "
                "run's val and test queries (ZeRO-3 partitions consolidated into its export's model), the best step "
                "chosen on val, a recall-vs-step plot (OUT/checkpoints.{json,md,png}); works under torchrun"})
    m2kr_task: str = field(default="EVQA", metadata={"help": "M2KR task (EVQA, OKVQA, Infoseek, OVEN, WIT, ...)"})
    pseudo_recall: bool = field(default=False, metadata={
        "help": "M2KR: also pseudo-recall (a top-K passage contains an answer), as PreFLMR reports for "
                "OKVQA / E-VQA / Infoseek"})
    blank_image: bool = field(default=True, metadata={
        "help": "M2KR: a query without an image gets a black 336x336 image, as PreFLMR's evaluation does"})
    retriever: list[str] = field(default_factory=list, metadata={"help": "KIND:PATH, repeatable (generative:RUN/ckpt/structured/export)"})
    split: str = field(default="test", metadata={"help": "split whose texts are the queries"})
    queries_file: Path | None = field(default=None, metadata={
        "help": "instead of the split's own texts: hand-written queries (benchmarks/natural_queries/<benchmark>-val.json), "
                "over the images of the split the file names"})
    protocol: str = field(default=DEFAULT_PROTOCOL, metadata={
        "help": "image-only | tagged: the protocol the retrievers were built under (recorded in the results; "
                "checked against the run's pseudo-queries when the dataset sits in a run folder)"})
    out: Path = field(default=Path("runs/emoji/results"), metadata={"help": "output folder"})
    ks: list[int] = field(default_factory=lambda: [1, 5, 10], metadata={"help": "recall cut-offs (any K, e.g. 1 5 10 20 50 100 500)"})
    num_beams: int = field(default=10, metadata={"help": "beams for generative retrievers"})
    length_penalty: float = field(default=1.0, metadata={"help": "beam-search length penalty"})
    compile: bool = field(default=False, metadata=COMPILE_HELP)
    trust_remote_code: bool = field(default=False, metadata=TRUST_HELP)
    batch_size: int = field(default=16, metadata={"help": "queries per search call"})
    max_queries: int = field(default=0, metadata={"help": "use only the first N queries (0 = all)"})
    seed: int = field(default=0, metadata={"help": "seed (random baseline)"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bars"})


@dataclass
class AblateConfig:
    """For each identifier scheme: ids → shards → trie → train → eval, reusing built artefacts."""

    run: Path = field(default=Path("runs/emoji"), metadata={"help": "run folder (RUN/data, RUN/ids/<scheme>, ...)"})
    dataset: Path | None = field(default=None, metadata={"help": "dataset.json (default RUN/data/dataset.json, built from emoji if absent)"})
    image_root: Path | None = field(default=None, metadata=IMAGE_ROOT_HELP)
    schemes: list[str] = field(default_factory=lambda: list(DEFAULT_SCHEMES), metadata={
        "help": f"identifier schemes ({', '.join(SCHEMES)})"})
    baselines: list[str] = field(default_factory=lambda: list(DEFAULT_BASELINES), metadata={
        "help": f"baseline retrievers scored on the same queries ({', '.join(BASELINES)}; 'none' for none); "
                "under --protocol tagged each one's _expanded twin is added"})
    benchmark: str = field(default="emoji", metadata={"help": "offline benchmark built into RUN/data when no dataset is given",
                                                       "choices": list(BENCHMARKS)})
    limit: int = field(default=0, metadata={"help": "images to build when the dataset is absent (0 = all)"})
    split_seed: int = field(default=-1, metadata={
        "help": "seed of the group-aware train/val/test split (-1: --seed); docs/protocol.md says which split seed is "
                "held back for a recipe's final verdict"})
    group_by: str = field(default="", metadata={
        "help": "with --dataset: re-split it group-aware under the split seed, an entry field (e.g. author) or re:REGEX over "
                "the file name putting images in one group (RUN/data/groups.json)"})
    encoder: str = field(default="efficientnet-lite0", metadata={"help": "image encoder for features"})
    tokenizer: str = field(default="smollm2", metadata={"help": "base tokenizer of the ids (smollm2, byte, HF id)"})
    model: str = field(default="tiny", metadata={"help": "model config (tiny, smollm2-effnet, ...)"})
    steps: int = field(default=200, metadata={"help": "training steps per scheme"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    batch_size_i2id: int = field(default=16, metadata={"help": "i2id samples per step"})
    batch_size_t2id: int = field(default=16, metadata={"help": "t2id samples per step"})
    nproc: int = field(default=1, metadata={"help": "training processes (torchrun) per scheme"})
    train_overrides: list[str] = field(default_factory=list, metadata={
        "help": "extra TrainConfig fields as KEY=VALUE, typed by the field, e.g. max_length=96 warmup_steps=30"})
    scheme_overrides: list[str] = field(default_factory=list, metadata={
        "help": "identifier-scheme settings as KEY=VALUE (SchemeConfig fields), e.g. k=10 c=10 cluster_on=text"})
    i2id_views: int = field(default=1, metadata={
        "help": "i2id sees each image and N-1 cached augmented views (crops, rotation, tone)"})
    vision_space: str = field(default="features", metadata={
        "help": "the generator's visual input: features (i2id rows read the image encoder's features, t2id rows and "
                "queries the null image) or clip_faiss (GENIUS: every row reads CLIP-FAISS's LiT joint space, the "
                "image's embedding for i2id, the text's for t2id and queries; grace.experiments.joint_space)",
        "choices": ["features", "clip_faiss"]})
    query_mix: float = field(default=0.0, metadata={
        "help": "with --vision-space clip_faiss: GENIUS query augmentation, a t2id row reads (1-w)*text + w*gold "
                "image, w ~ U[0, MIX]"})
    protocol: str = field(default=DEFAULT_PROTOCOL, metadata={
        "help": "image-only: held-out images' pseudo-queries from the image alone (knn-captions, lit-captions, "
                "self-caption, captioner:MODEL); tagged: from their metadata (keywords). Written into every result file"})
    pseudo_query_generator: str = field(default="", metadata={
        "help": "knn-captions | lit-captions | self-caption | captioner:MODEL_ID | keywords (default: the protocol's)"})
    pseudo_queries: list[str] = field(default_factory=list, metadata={
        "help": "the generator's options as KEY=VALUE (each value read as YAML), e.g. k=5 max_queries=8 "
                "(knn-captions) or max_queries=24 pairs=true 'templates=[\"{}\", \"an emoji of {}\"]' (keywords)"})
    num_beams: int = field(default=10, metadata={"help": "beams at evaluation"})
    select_on: str = field(default="val", metadata={
        "help": "val: also score every row on the val split, choose the best generative and non-generative rows "
                "there, and state the verdict on test; none: test only (no choice is then claimed)",
        "choices": ["val", "none"]})
    natural_queries: Path | None = field(default=None, metadata={
        "help": "hand-written val queries to report every row on (benchmarks/natural_queries/<benchmark>-val.json)"})
    max_queries: int = field(default=0, metadata={"help": "evaluate only the first N queries of each set (0 = all)"})
    seed: int = field(default=0, metadata={"help": "seed"})
    hybrid: list[str] = field(default_factory=list, metadata={
        "help": "baselines that re-score each scheme's top --hybrid-depth generated candidates (clip_faiss, "
                "clip_faiss_expanded): a <scheme>+<baseline> row whose fusion weight is chosen on val"})
    hybrid_depth: int = field(default=20, metadata={"help": "generated candidates a hybrid re-scores (beams ≥ it)"})
    hybrid_fusion: str = field(default="interpolate", metadata={
        "help": "interpolate (min-max normalised scores) or rrf (reciprocal ranks)"})
    hybrid_pools: list[str] = field(default_factory=lambda: ["first", "union"], metadata={
        "help": "candidate pools chosen among on val: first (the beam's top --hybrid-depth) and union (with the "
                "baseline's top --hybrid-depth)"})
    training_seeds: list[int] = field(default_factory=list, metadata={
        "help": "more training seeds for the generative row selected on val (every scheme under --select-on none): "
                "retrained on the same ids, data and queries and scored on test; the table gives each seed's recall "
                "and their mean and sd with --seed's"})
    force: list[str] = field(default_factory=list, metadata={
        "help": "stages to rebuild, with everything downstream of them, whatever their records say: data, features, "
                "pseudo-queries, ids/<scheme>, shards/<scheme>, trie/<scheme>, train/<name>, build/<baseline>[/<part>] "
                "(a prefix names the stages under it; --force alone or 'all': every stage)"})
    publish: Path | None = field(default=None, metadata={
        "help": "also write the table, JSON and plot as DIR/<benchmark>-<model>-<protocol>.{md,json,png} with the command, "
                "machine and wall time (e.g. docs/results)"})
    publish_name: str = field(default="", metadata={
        "help": "the published files' name after <benchmark>- (e.g. best: DIR/<benchmark>-best.{md,json,png}); "
                "default <model>-<protocol>[-<space>-space]"})


def split_seed(config: AblateConfig) -> int:
    """The seed of the run's train / val / test split: ``--split-seed``, else ``--seed``."""
    return config.split_seed if config.split_seed >= 0 else config.seed


@dataclass
class DemoConfig:
    """The whole pipeline on the embedded emoji benchmark; ``--quick`` is the CPU preset."""

    out: Path = field(default=Path("runs/demo"), metadata={"help": "run folder"})
    quick: bool = field(default=False, metadata={"help": "CPU preset (<= 15 min on 2 cores)"})
    schemes: list[str] = field(default_factory=list, metadata={"help": "schemes (default: preset's)"})
    baselines: list[str] = field(default_factory=list, metadata={"help": "baselines (default: preset's; 'none')"})
    limit: int = field(default=-1, metadata={"help": "emoji images (-1 = preset's, 0 = all)"})
    model: str = field(default="", metadata={"help": "model config (default: preset's)"})
    steps: int = field(default=0, metadata={"help": "training steps (0 = preset's)"})
    nproc: int = field(default=0, metadata={"help": "training processes (0 = preset's)"})
    protocol: str = field(default=DEFAULT_PROTOCOL, metadata={"help": "image-only | tagged (see grace ablate)"})
    seed: int = field(default=0, metadata={"help": "seed"})


@dataclass
class RetrieversConfig:
    """Which retrievers to load (``KIND:PATH``, or every retriever of ``--run``) and the corpus they search."""

    retriever: list[str] = field(default_factory=list, metadata={"help": "KIND:PATH, repeatable (default: every retriever of --run)"})
    run: Path | None = field(default=None, metadata={"help": "run folder whose trained retrievers to load"})
    dataset: Path | None = field(default=None, metadata={"help": "dataset.json naming the image files (default RUN/data/dataset.json)"})
    image_root: Path | None = field(default=None, metadata=IMAGE_ROOT_HELP)
    split: str = field(default="test", metadata={"help": "split whose images are the corpus"})
    num_beams: int = field(default=10, metadata={"help": "beams for generative retrievers"})
    compile: bool = field(default=False, metadata=COMPILE_HELP)
    trust_remote_code: bool = field(default=False, metadata=TRUST_HELP)


@dataclass
class SearchConfig(RetrieversConfig):
    """Ask retrievers (``KIND:PATH``, or every retriever of ``--run``) for the images of text or image queries."""

    queries_file: Path | None = field(default=None, metadata={"help": "file with one query per line"})
    image: Path | None = field(default=None, metadata={"help": "query image (retrievers that take images)"})
    k: int = field(default=10, metadata={"help": "results per query"})
    json: bool = field(default=False, metadata={"help": "print JSON instead of tables"})


@dataclass
class ServeConfig(RetrieversConfig):
    """Serve the search page and JSON API over the retrievers of a run (or ``--retriever KIND:PATH``)."""

    host: str = field(default="127.0.0.1", metadata={"help": "bind address (loopback by default)"})
    port: int = field(default=8000, metadata={"help": "port"})
    max_batch: int = field(default=32, metadata={"help": "most concurrent queries batched into one search call"})
    window_ms: float = field(default=5.0, metadata={"help": "how long a request waits for others to join its batch"})
    max_k: int = field(default=100, metadata={"help": "the most results one request may ask for"})
    timeout_s: float = field(default=30.0, metadata={"help": "seconds a request waits for results before a 504"})
    max_pending: int = field(default=256, metadata={"help": "requests waiting per retriever before a 503"})
