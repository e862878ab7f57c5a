"""Auto-parts in the studio: a candidate's part clusters at image resolution, and the classes of parts.

The clusters come from the workspace's part model (`datasetgan discover`, `datasetgan.discovery`),
read again for every request: it is small (k centroids), and a model rediscovered while the
studio runs is then used at once, never a stale one.
"""

import numpy as np
import torch

from datasetgan.annotate.pyramids import FeatureCache
from datasetgan.discovery import PartDiscovery, check_mapping, mapping_path, read_mapping, write_mapping
from datasetgan.workspace import Workspace


class AutoParts:
    """Cluster maps of candidates (ids already checked) and the workspace's cluster -> class mapping."""

    def __init__(self, workspace: Workspace, features: FeatureCache):
        self.workspace, self.features = workspace, features

    def model(self) -> PartDiscovery:
        """The part model; DatasetGANError (saying to run `datasetgan discover`) when there is none."""
        return PartDiscovery.load(self.workspace.parts_dir)

    def cluster_map(self, cid: str, discovery: PartDiscovery) -> np.ndarray:
        """uint16 `[H, W]`: the cluster of every image pixel, nearest to the model's S x S grid
        (pixel (y, x) takes cell (y * S // H, x * S // W): whole blocks when S divides the size)."""
        with self.features.open(cid) as candidate:
            cells = discovery.cluster_maps(candidate.pyramid)[0].cpu()
            height, width = candidate.size
        rows = torch.arange(height) * cells.shape[0] // height
        columns = torch.arange(width) * cells.shape[1] // width
        return cells[rows][:, columns].numpy().astype(np.uint16)

    def mapping(self, discovery: PartDiscovery) -> dict[int, str]:
        """Every cluster's class name or "ignore"; all "ignore" before a mapping is written, so the
        person can start mapping parts in the studio."""
        if not mapping_path(self.workspace).is_file():
            return check_mapping({}, discovery.k, [c.name for c in self.workspace.label_classes], "the mapping")
        return read_mapping(self.workspace, discovery)

    def set_mapping(self, discovery: PartDiscovery, mapping: dict[str, str]) -> dict[int, str]:
        """Replace the mapping (JSON keys: cluster ids as strings; clusters left out are "ignore"),
        checked by `write_mapping`, and return it as saved."""
        write_mapping(self.workspace, discovery, mapping)
        return read_mapping(self.workspace, discovery)
