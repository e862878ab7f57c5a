"""Does the world oracle paint unusual images worse? (Table 6's open question.)

    python bench/oracle_on_unusual.py --bench out/paper-v2            # seed 0's Table 6 workspaces
    python bench/oracle_on_unusual.py --bench out/paper-v2 --seed 1 --n 500 --threads 1

Active learning picks the generated samples its interpreter is least sure of, and the world
oracle (a segmenter trained on real world images) paints them in place of a person. Generated
images have no exact labels, so the question is asked of real images, which do: how unusual
an image is (the distance to its 3rd nearest neighbour among other real images, in the
oracle's encoder space, as precision/recall measure it) against the oracle's mIoU on that
image. Then the same distance for the annotations of the bench's Table 6 workspaces (random
and actively picked) places them on that scale. The oracle's confidence (mean top softmax
probability) is shown beside, for real and generated images alike.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from datasetgan.gan.quality import NEIGHBOURS, read
from datasetgan.metrics import confusion_matrix, scores_from_confusion
from datasetgan.segment.data import read_image
from datasetgan.segment.models import normalize
from datasetgan.workspace import Workspace
from datasetgan.worlds import get_world
from datasetgan.worlds.oracle import load_oracle, render_split

QUINTILES = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", type=Path, required=True, help="a `datasetgan bench` output folder with Table 6")
    parser.add_argument("--seed", type=int, default=0, help="the bench seed whose workspaces to read")
    parser.add_argument("--n", type=int, default=1000, help="real test images scored, and as many references")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    num_classes = len(get_world("faces").classes)
    oracle = load_oracle("faces", 64, device)
    reference = read(oracle, render_split("faces", "real_train", args.n, 64)[0], device, num_classes).embeddings
    images, masks = render_split("faces", "real_test", args.n, 64)
    unusual = distance_to_reference(read(oracle, images, device, num_classes).embeddings, reference)
    painted, confidence = paint(oracle, images)
    iou = np.array([scores_from_confusion(confusion_matrix(p, t, num_classes)).miou  # classes in truth or guess
                    for p, t in zip(painted, masks)])
    for name, value in (("unusualness", unusual), ("the oracle's confidence", confidence)):
        print(f"Spearman correlation of {name} and the oracle's per-image mIoU: {spearman(value, iou):+.2f}")
    print(f"({args.n} real test images)")
    edges = quintile_table("unusualness", unusual, iou, confidence)
    quintile_table("the oracle's confidence", confidence, iou, confidence)
    print("\n| annotated generated images | n | distance, median | share above the real images' 80th percentile | "
          "oracle's confidence |")
    print("|---|---|---|---|---|")
    for name in sorted(p.name for p in (args.bench / "work" / f"seed{args.seed}").glob("*")
                       if p.name == "main" or p.name.startswith(("random-", "active-"))):
        workspace = Workspace.open(args.bench / "work" / f"seed{args.seed}" / name)
        ids = workspace.annotated_ids()
        picked = torch.from_numpy(np.stack([read_image(workspace.candidate_image(c)) for c in ids])).permute(0, 3, 1, 2)
        distance = distance_to_reference(read(oracle, picked, device, num_classes).embeddings, reference)
        print(f"| {name} | {len(ids)} | {np.median(distance):.2f} | {(distance > edges[-2]).mean():.2f} | "
              f"{paint(oracle, picked)[1].mean():.3f} |")


def quintile_table(name: str, value: np.ndarray, iou: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """The real images in quintiles of `value`: its range, the oracle's per-image mIoU and confidence."""
    edges = np.quantile(value, np.linspace(0, 1, QUINTILES + 1))
    print(f"\n| real test images, by {name} | range | oracle's per-image mIoU % | oracle's confidence |")
    print("|---|---|---|---|")
    for q in range(QUINTILES):
        inside = (value >= edges[q]) & (value <= edges[q + 1])
        print(f"| quintile {q + 1} | {edges[q]:.3f}-{edges[q + 1]:.3f} | {100 * iou[inside].mean():.1f} | "
              f"{confidence[inside].mean():.3f} |")
    return edges


def distance_to_reference(points: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    """Each point's distance to its k-th nearest reference image: large where the world is sparse."""
    return torch.cdist(points, reference).kthvalue(NEIGHBOURS, dim=1).values.numpy()


@torch.no_grad()
def paint(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 100) -> tuple[torch.Tensor, np.ndarray]:
    """The oracle's masks, and its mean top softmax probability per image: how sure it is of them."""
    model.eval()
    masks, confidence = [], []
    for i in range(0, len(images), batch_size):
        top = model(normalize(images[i : i + batch_size])).softmax(1).max(1)
        masks.append(top.indices.to(torch.uint8))
        confidence.append(top.values.mean(dim=(1, 2)))
    return torch.cat(masks), torch.cat(confidence).numpy()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731 - ties are rare in float distances
    return float(np.corrcoef(rank(a), rank(b))[0, 1])


if __name__ == "__main__":
    main()
