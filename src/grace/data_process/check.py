"""``grace data check``: find the missing and unreadable images of a Karpathy-form dataset before any stage
reads it (a Flickr30K or COCO download unpacked in the wrong folder, a truncated JPEG)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from grace.data_process.dataset import Dataset, ImageRecord
from grace.data_process.features import open_image
from grace.errors import InputError


def _check_one(record: ImageRecord, decode: bool) -> tuple[str, str | None]:
    """("ok" | "missing" | "corrupt", why): corrupt = what every stage's ``open_image`` refuses."""
    if not record.path.is_file():
        return "missing", None
    if decode:
        try:
            open_image(record.path)  # a full decode: a truncated file fails here, not at open
        except InputError as err:
            return "corrupt", str(err)
    return "ok", None


def check_images(dataset: Dataset, *, decode: bool = True, workers: int = 8, progress: bool = True) -> dict:
    """Every image of ``dataset`` checked (exists; with ``decode``, opens and decodes with PIL). Returns the
    counts and, per problem, the image id, the JSON entry index, the path and why."""
    from tqdm import tqdm

    records = dataset.images
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        statuses = list(tqdm(pool.map(lambda r: _check_one(r, decode), records), total=len(records),
                             desc="check images", disable=not progress))
    report: dict = {"dataset": dataset.name, "image_root": str(dataset.root) if dataset.root else None,
                    "images": len(records), "texts": sum(len(r.texts) for r in records),
                    "splits": dataset.split_counts(), "decoded": decode, "missing": [], "corrupt": []}
    for index, (record, (status, why)) in enumerate(zip(records, statuses)):
        if status != "ok":
            report[status].append({"image_id": record.image_id, "entry": index, "path": str(record.path),
                                   **({"error": why} if why else {})})
    report["ok"] = len(records) - len(report["missing"]) - len(report["corrupt"])
    return report


def format_report(report: dict, show: int = 10) -> str:
    """A few lines: the counts, the first ``show`` problems of each kind, and a hint when nothing was found."""
    splits = ", ".join(f"{k} {v}" for k, v in sorted(report["splits"].items()))
    corrupt = f"corrupt {len(report['corrupt'])}" if report["decoded"] else "not decoded (--no-decode)"
    lines = [(f"{report['dataset']}: {report['images']} images ({splits}), {report['texts']} texts; "
              f"image root {report['image_root']}"),
             f"ok {report['ok']}, missing {len(report['missing'])}, {corrupt}"]
    for kind in ("missing", "corrupt"):
        for problem in report[kind][:show]:
            why = f" ({problem['error']})" if "error" in problem else ""
            lines.append(f"  {kind}: {problem['image_id']} (entry {problem['entry']}): {problem['path']}{why}")
        if len(report[kind]) > show:
            lines.append(f"  ... and {len(report[kind]) - show} more {kind}")
    if report["images"] and len(report["missing"]) == report["images"]:
        lines.append(f"none of the images is under {report['image_root']}: pass --image-root, the folder that "
                     "holds them (Flickr30K: the unpacked flickr30k-images/; COCO: the folder above train2014/ val2014/)")
    return "\n".join(lines)


def problems(report: dict) -> int:
    """How many images are missing or corrupt."""
    return len(report["missing"]) + len(report["corrupt"])


def default_report_path(dataset_json: Path) -> Path:
    """Where the full report goes unless ``--report`` says otherwise: beside the JSON."""
    return Path(dataset_json).with_name(Path(dataset_json).stem + ".check.json")
