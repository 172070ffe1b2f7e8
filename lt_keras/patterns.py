"""Sparsity patterns a mask may be held to: unstructured, blocks, or n:m groups.

What runs faster depends on the pattern, not on the density alone: TFLite's
sparse FULLY_CONNECTED kernel takes 1x4 blocks (float) or 1x16 (int8) and
densifies anything else at run time; sparse tensor cores take 2:4. So a
search can prune in the pattern's units:

- ``block:RxC``: R outputs x C consecutive inputs, TFLite's layout of a
  kernel (``[out, in]``); a block is kept or pruned whole, scored by the mean
  of its weights' scores;
- ``n:m``: of every m consecutive inputs of an output, at most n are kept
  (the best-scored n), the layout sparse tensor cores run.

A kernel is seen as its ``(fan_in, out)`` matrix: Dense ``(in, out)``, a
convolution ``(kh * kw * in, out)``. Edges that do not fill a whole block or
group are padded virtually with pruned weights, as the kernels that run them
pad. Layers whose kernel is not laid out so (depthwise, transposed
convolutions, embeddings) are pruned unstructured.
"""
import dataclasses
import re

import numpy as np

from lt_keras.errors import ConfigError

PATTERNS = "unstructured, block:RxC (e.g. block:1x4) or n:m (e.g. 2:4)"


@dataclasses.dataclass(frozen=True)
class SparsityPattern:
    kind: str = "unstructured"  # "unstructured", "block" or "n:m"
    rows: int = 1  # block: outputs
    cols: int = 1  # block: inputs
    n: int = 0
    m: int = 0

    @classmethod
    def parse(cls, text, field="sparsity_pattern") -> "SparsityPattern":
        if isinstance(text, SparsityPattern):
            return text
        text = str(text).strip()
        if text == "unstructured":
            return cls()
        block = re.fullmatch(r"block:(\d+)x(\d+)", text)
        if block and int(block[1]) >= 1 and int(block[2]) >= 1 and int(block[1]) * int(block[2]) > 1:
            return cls("block", rows=int(block[1]), cols=int(block[2]))
        group = re.fullmatch(r"(\d+):(\d+)", text)
        if group and 1 <= int(group[1]) < int(group[2]):
            return cls("n:m", n=int(group[1]), m=int(group[2]))
        raise ConfigError(field, f"{text!r} is not a sparsity pattern: {PATTERNS} (a block of more than one "
                          "weight; n < m).")

    @property
    def text(self) -> str:
        return {"unstructured": "unstructured", "block": f"block:{self.rows}x{self.cols}",
                "n:m": f"{self.n}:{self.m}"}[self.kind]

    @property
    def structured(self) -> bool:
        return self.kind != "unstructured"

    @property
    def density(self):
        """The density an n:m pattern fixes (None for the others)."""
        return self.n / self.m if self.kind == "n:m" else None

    # Blocks: a kernel's (fan_in, out) matrix padded to whole blocks, as (blocks_in, cols, blocks_out, rows).
    def _blocked(self, values, shape, fill):
        matrix = np.asarray(values, np.float64).reshape(-1, shape[-1])
        fan_in, out = matrix.shape
        padded = np.full((-(-fan_in // self.cols) * self.cols, -(-out // self.rows) * self.rows), fill)
        padded[:fan_in, :out] = matrix
        return padded.reshape(padded.shape[0] // self.cols, self.cols, padded.shape[1] // self.rows, self.rows)

    def block_sizes(self, shape):
        """How many real weights each ``(blocks_in, blocks_out)`` block of a kernel of ``shape`` holds."""
        return self._blocked(np.ones(shape), shape, 0.0).sum(axis=(1, 3))

    def block_scores(self, scores, mask):
        """Each block's score (the mean of its weights') and whether it is alive (any weight kept), as
        ``(blocks_in, blocks_out)`` arrays."""
        shape = np.shape(mask)
        total = self._blocked(scores, shape, 0.0).sum(axis=(1, 3))
        alive = self._blocked(mask, shape, 0.0).max(axis=(1, 3))
        return total / self.block_sizes(shape), alive

    def expand_blocks(self, block_mask, shape):
        """An element mask of ``shape`` from a ``(blocks_in, blocks_out)`` mask."""
        full = np.repeat(np.repeat(block_mask, self.cols, axis=0), self.rows, axis=1)
        fan_in = int(np.prod(shape[:-1]))
        return full[:fan_in, :shape[-1]].reshape(shape).astype(np.float32)

    def keep_n_of_m(self, scores, mask, rng=None):
        """The mask that keeps, of every m consecutive inputs of each output, the n best-scored alive weights
        (equal scores in a random order from ``rng``, by index without one)."""
        shape = np.shape(mask)
        matrix = np.asarray(scores, np.float64).reshape(-1, shape[-1])
        alive = np.asarray(mask).reshape(-1, shape[-1]) > 0
        fan_in, out = matrix.shape
        groups = -(-fan_in // self.m)
        ranked = np.full((groups * self.m, out), -np.inf)
        ranked[:fan_in] = np.where(alive, matrix, -np.inf)
        ranked = ranked.reshape(groups, self.m, out).transpose(0, 2, 1)  # (groups, out, m)
        ties = (rng.random_sample(ranked.shape) if rng is not None
                else np.broadcast_to(np.arange(self.m, 0, -1), ranked.shape))
        order = np.lexsort((ties, ranked))[..., ::-1]  # best first
        keep = np.zeros(ranked.shape, bool)
        np.put_along_axis(keep, order[..., : self.n], True, axis=-1)
        keep &= np.isfinite(ranked)
        keep = keep.transpose(0, 2, 1).reshape(groups * self.m, out)[:fan_in]
        return keep.reshape(shape).astype(np.float32)

    def violations(self, mask) -> int:
        """How many blocks (or groups) of ``mask`` break the pattern: 0 for a mask that obeys it."""
        mask = np.asarray(mask)
        if self.kind == "block":
            blocks = self._blocked(mask, mask.shape, 0.0)
            real = self._blocked(np.ones(mask.shape), mask.shape, 0.0) > 0
            kept = (blocks > 0) & real
            whole = kept.sum(axis=(1, 3)) == real.sum(axis=(1, 3))
            return int(np.sum(kept.any(axis=(1, 3)) & ~whole))
        if self.kind == "n:m":
            matrix = mask.reshape(-1, mask.shape[-1]) > 0
            groups = -(-matrix.shape[0] // self.m)
            padded = np.zeros((groups * self.m, matrix.shape[1]), bool)
            padded[: matrix.shape[0]] = matrix
            return int(np.sum(padded.reshape(groups, self.m, -1).sum(axis=1) > self.n))
        return 0


def check_masks(masks: dict, pattern: SparsityPattern, keys, what="mask"):
    """Raise unless every tensor in ``keys`` of ``masks`` obeys ``pattern`` (the check of every mask written)."""
    broken = {key: pattern.violations(masks[key]) for key in keys}
    broken = {key: count for key, count in broken.items() if count}
    if broken:
        raise ConfigError("sparsity_pattern", f"the {what} breaks {pattern.text} in {broken} (blocks or groups); "
                          "this is a bug: please report it.")
