"""`EntityIndex`: the key embeddings of a knowledge graph's entities, with their training degrees and ids, and exact
top-k search over them in bounded memory; `FaissSearcher`: approximate search through FAISS (an optional extra).

The index is built by streaming entity texts through the key encoder shard by shard (`EntityIndex.build`): with a
folder, every finished shard is a safetensors file, so an interrupted build resumes from its finished shards, and
under `accelerate launch` every process encodes its share of the shards. Saved indexes load memory-mapped: a
1M-entity index costs address space, not memory, until its rows are read.

Files (in a model's folder, beside `model.safetensors`):
- `entity_index.safetensors`: tensors `keys` `(N, hidden)` and `degrees` `(N,)`; metadata `num_entities` and
  `weights_sha256` (the fingerprint of the weights that encoded the keys). Indexes of up to `shard_size` rows.
- larger ones: `entity_index-00001-of-00004.safetensors` ... (the same tensors for rows `start:stop`, recorded in
  their metadata) and the manifest `entity_index.json` (`num_entities`, `hidden_size`, `dtype`, `weights_sha256`,
  `shards`), written last: shards without a manifest are an unfinished build.

Scores are always those of the model (`ClmkeForLinkPrediction.score_all`: the paper's matcher, or the cosine with the
own-entity offset), computed in fp32 whatever the storage dtype, so exact search and ranking give the model's own
answers. Self-contained (no imports from the rest of the package) so that saved checkpoints load with
`trust_remote_code=True` where `lmke_hf` is not installed.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from accelerate import Accelerator
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

ENTITY_INDEX_FILE = "entity_index.safetensors"
MANIFEST_FILE = "entity_index.json"
FAISS_FILE = "entity_index.faiss"
DEFAULT_SHARD_SIZE = 262_144  # rows per file: 384 MiB of fp32 keys at MiniLM's width
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# safetensors dtype names -> (numpy dtype to map the bytes as, torch dtype to view them as)
_SAFETENSORS_DTYPES = {
    "F32": (np.float32, torch.float32),
    "F16": (np.float16, torch.float16),
    "BF16": (np.int16, torch.bfloat16),
    "F64": (np.float64, torch.float64),
    "I64": (np.int64, torch.int64),
    "I32": (np.int32, torch.int32),
}


class EntityIndexError(ValueError):
    """A file that is not a readable entity index (damaged, foreign, or of the wrong shape)."""


def shard_file_name(number: int, total: int) -> str:
    return f"entity_index-{number:05d}-of-{total:05d}.safetensors"


def read_safetensors(path: str | os.PathLike, mmap: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; with `mmap`, the tensors are copy-on-write views of the file (pages
    are read when touched, and writing to a tensor never changes the file)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100 * 2**20:
                raise EntityIndexError(f"{path}: a header of {length} bytes is not a safetensors header")
            header = json.loads(handle.read(length))
        size = os.path.getsize(path)
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EntityIndexError(f"{path} is not a safetensors file ({type(err).__name__}: {err})") from err
    if not isinstance(header, dict):
        raise EntityIndexError(f"{path} is not a safetensors file (its header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    base = 8 + length
    tensors = {}
    for name, info in header.items():
        try:
            np_dtype, torch_dtype = _SAFETENSORS_DTYPES[info["dtype"]]
            shape = tuple(int(n) for n in info["shape"])
            start, stop = (int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as err:
            raise EntityIndexError(
                f"{path}: tensor {name!r} has an unreadable or unsupported header entry {info!r}"
            ) from err
        count = int(np.prod(shape, dtype=np.int64))
        if stop - start != count * np.dtype(np_dtype).itemsize or base + stop > size:
            raise EntityIndexError(
                f"{path}: tensor {name!r} ({info['dtype']} {list(shape)}) does not fit its bytes: the file is truncated or damaged"
            )
        if count == 0:
            array = np.zeros(shape, dtype=np_dtype)
        elif mmap:
            array = np.memmap(path, dtype=np_dtype, mode="c", offset=base + start, shape=shape)
        else:
            with open(path, "rb") as handle:
                handle.seek(base + start)
                array = np.frombuffer(handle.read(stop - start), dtype=np_dtype).reshape(shape).copy()
        tensor = torch.from_numpy(array)
        tensors[name] = tensor.view(torch_dtype) if torch_dtype == torch.bfloat16 else tensor
    return tensors, metadata


def _save_file(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str]) -> None:
    """safetensors file written under a temporary name and renamed into place: a reader never sees half a file."""
    from safetensors.torch import save_file

    partial = f"{path}.partial"
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, partial, metadata=metadata)
    os.replace(partial, path)


class EntityIndex:
    """Key embeddings `(num_entities, hidden)` of a KG's entities, their training degrees and (optionally) their ids.

    The keys may be one tensor or several row shards (a memory-mapped saved index); `keys` joins them on first use,
    while `tiles`, `scores` and `search` walk the shards without joining them.

    Args:
        keys: `(N, hidden)` floating-point tensor, or a list of `(n_i, hidden)` shards in row order.
        degrees: `(N,)` training degrees (default zeros).
        ids: the N entity ids (optional; the model's tokenizer knows them too).
        weights_sha256: fingerprint of the weights that encoded the keys (`model.weights_fingerprint()`).
    """

    def __init__(
        self,
        keys: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...],
        degrees: torch.Tensor | np.ndarray | Sequence[float] | None = None,
        ids: Sequence[str] | None = None,
        weights_sha256: str | None = None,
    ) -> None:
        shards = list(keys) if isinstance(keys, (list, tuple)) else [keys]
        if not shards or not all(
            isinstance(s, torch.Tensor) and s.dim() == 2 and s.is_floating_point() for s in shards
        ):
            got = [tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__ for s in shards]
            raise ValueError(f"EntityIndex keys must be (num_entities, hidden) floating-point tensors, got {got}.")
        widths = {s.shape[1] for s in shards}
        if len(widths) != 1:
            raise ValueError(f"EntityIndex shards have different widths {sorted(widths)}.")
        self._shards = shards
        self._starts = np.cumsum([0] + [s.shape[0] for s in shards])
        n = int(self._starts[-1])
        degrees = torch.zeros(n) if degrees is None else torch.as_tensor(degrees, dtype=torch.float32).view(-1)
        if degrees.numel() != n:
            raise ValueError(f"EntityIndex got {degrees.numel()} degrees for {n} keys.")
        if ids is not None and len(ids) != n:
            raise ValueError(f"EntityIndex got {len(ids)} ids for {n} keys.")
        self.degrees = degrees
        self.ids = list(ids) if ids is not None else None
        self.weights_sha256 = weights_sha256
        self._joined: torch.Tensor | None = shards[0] if len(shards) == 1 else None
        self._finite: bool | None = None
        self._unit: list[torch.Tensor | None] = [None] * len(
            shards
        )  # per shard: its unit-length keys, made on first use

    # ------------------------------------------------------------------ shape and rows
    @property
    def num_entities(self) -> int:
        return int(self._starts[-1])

    def __len__(self) -> int:
        return self.num_entities

    @property
    def hidden_size(self) -> int:
        return int(self._shards[0].shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self._shards[0].dtype

    @property
    def device(self) -> torch.device:
        return self._shards[0].device

    @property
    def keys(self) -> torch.Tensor:
        """All keys as one `(N, hidden)` tensor (joins the shards once; prefer `tiles` for large indexes)."""
        if self._joined is None:
            self._joined = torch.cat(self._shards, 0)
            self._shards = [self._joined]
            self._starts = np.array([0, self._joined.shape[0]])
            self._unit = [torch.cat(self._unit, 0) if all(u is not None for u in self._unit) else None]
        return self._joined

    def rows(self, index: torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor:
        """Keys of the row indices `index` `(len(index), hidden)`."""
        index = torch.as_tensor(index, dtype=torch.long).view(-1)
        if len(self._shards) == 1:
            return self._shards[0][index.to(self.device)]
        out = torch.empty(len(index), self.hidden_size, dtype=self.dtype)
        which = np.searchsorted(self._starts, index.numpy(), side="right") - 1
        for s in np.unique(which):
            sel = torch.as_tensor(np.nonzero(which == s)[0])
            out[sel] = self._shards[s][index[sel] - int(self._starts[s])].cpu()
        return out

    def tiles(self, max_rows: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """`(start, keys[start : start + n])` over all rows, `n <= max_rows`, never crossing a shard boundary."""
        return _tiles(self._starts, self._shards, max_rows)

    def unit_tiles(self, max_rows: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """`tiles` of the keys scaled to unit length, in the index's dtype: what the cosine scorer ranks. Each shard is
        normalised once, on first use, and kept with the index (one more copy of the keys, in memory), so repeated
        searches do not normalise every key again; an index grown by `append` normalises only its new rows."""
        for k, shard in enumerate(self._shards):
            if self._unit[k] is None:
                self._unit[k] = _unit_keys(shard)
        return _tiles(self._starts, self._unit, max_rows)

    def _scoring_tiles(self, model, max_rows: int) -> tuple[Iterator[tuple[int, torch.Tensor]], bool]:
        """The tiles a model ranks, and whether they are unit keys: unit ones for the cosine scorer (normalised once
        per index), the stored keys for the matcher (which reads their length)."""
        if getattr(model.config, "scorer", None) == "cosine":
            return self.unit_tiles(max_rows), True
        return self.tiles(max_rows), False

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> EntityIndex:
        """A copy with the keys on `device` and/or stored as `dtype` (e.g. `torch.float16` halves the memory)."""
        moved = EntityIndex(
            [s.to(device=device, dtype=dtype) for s in self._shards], self.degrees, self.ids, self.weights_sha256
        )
        moved._finite = self._finite
        return moved

    def append(
        self,
        keys: torch.Tensor,
        degrees: torch.Tensor | np.ndarray | Sequence[float] | None = None,
        ids: Sequence[str] | None = None,
    ) -> EntityIndex:
        """A new index with `keys` `(n, hidden)` as its last rows (entities added after training: degree 0)."""
        keys = keys.to(device=self.device, dtype=self.dtype)
        degrees = torch.zeros(keys.shape[0]) if degrees is None else torch.as_tensor(degrees, dtype=torch.float32)
        new_ids = None if self.ids is None or ids is None else self.ids + list(ids)
        grown = EntityIndex(
            self._shards + [keys], torch.cat([self.degrees, degrees.view(-1)]), new_ids, self.weights_sha256
        )
        grown._unit = self._unit + [None]  # the old rows' unit keys hold; the new rows are normalised on first use
        return grown

    def nonfinite_rows(self, limit: int = 5) -> tuple[int, list[int]]:
        """How many keys hold NaN or inf values, and the first `limit` of their rows (checked once, then cached)."""
        if self._finite:
            return 0, []
        count, first = 0, []
        for start, tile in self.tiles(65_536):
            bad = (~torch.isfinite(tile).all(1)).nonzero().view(-1)
            count += bad.numel()
            first += (bad[: max(0, limit - len(first))] + start).tolist()
        self._finite = count == 0
        return count, first

    # ------------------------------------------------------------------ building
    @classmethod
    @torch.no_grad()
    def build(
        cls,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        batch_size: int = 256,
        shard_size: int | None = None,
        dtype: torch.dtype | str = torch.float32,
        save_directory: str | os.PathLike | None = None,
        accelerator: Accelerator | None = None,
        progress: bool = False,
    ) -> EntityIndex:
        """Encodes every entity's key with `model` (a `ClmkeForLinkPrediction`), `shard_size` entities at a time.

        (`model` and `tokenizer` are typed by their transformers / torch base classes: this file travels with saved
        models and imports nothing of the rest of the package.)

        Args:
            tokenizer (`LmkeTokenizer`, *optional*): default the model's (`model.load_kg_tokenizer()`).
            dtype: storage dtype of the keys (`float32`, `float16` or `bfloat16`); scores are computed in fp32.
            save_directory (*optional*): write each finished shard there as it is done (`entity_index-*.safetensors`,
                then the manifest `entity_index.json`); a build interrupted there resumes from its finished shards
                (those encoded by the same weights). The result is the saved index, memory-mapped.
            accelerator (`accelerate.Accelerator`, *optional*): each process encodes every `num_processes`-th shard;
                all processes return the whole index.
            progress: a progress bar (entities encoded by this process).
        """
        dtype = _storage_dtype(dtype)
        shard_size = DEFAULT_SHARD_SIZE if shard_size is None else shard_size
        if int(shard_size) < 1:
            raise ValueError(f"shard_size must be >= 1 entity, got {shard_size}.")
        tokenizer = model.load_kg_tokenizer() if tokenizer is None else tokenizer
        n = tokenizer.num_entities
        fingerprint = model.weights_fingerprint()
        bounds = [(s, min(s + int(shard_size), n)) for s in range(0, n, int(shard_size))] or [(0, 0)]
        rank, world = (0, 1) if accelerator is None else (accelerator.process_index, accelerator.num_processes)
        mine = list(range(rank, len(bounds), world))
        folder = None if save_directory is None else os.fspath(save_directory)
        if folder is not None:
            os.makedirs(folder, exist_ok=True)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(bounds[i][1] - bounds[i][0] for i in mine), desc="Encoding entities", unit="entity")
        degrees = model.entity_degrees.detach().float().cpu()
        local = {}
        for i in mine:
            start, stop = bounds[i]
            path = None if folder is None else os.path.join(folder, shard_file_name(i + 1, len(bounds)))
            if path is not None and _finished_shard(path, start, stop, fingerprint, dtype):
                logger.info(f"{path}: finished by an earlier build with these weights; kept")
                if bar is not None:
                    bar.update(stop - start)
                continue
            # a shard's word pieces are not kept: a million-entity graph's would cost gigabytes
            keys = (
                model.encode_entities(np.arange(start, stop), batch_size, tokenizer=tokenizer, keep_pieces=False)
                .to(dtype)
                .cpu()
            )
            if path is not None:
                meta = {"start": str(start), "stop": str(stop), "num_entities": str(n), "weights_sha256": fingerprint}
                _save_file({"keys": keys, "degrees": degrees[start:stop]}, path, meta)
            else:
                local[i] = keys
            if bar is not None:
                bar.update(stop - start)
        if bar is not None:
            bar.close()
        if folder is not None:
            if accelerator is not None:
                accelerator.wait_for_everyone()
            if rank == 0:
                files = [shard_file_name(i + 1, len(bounds)) for i in range(len(bounds))]
                _write_manifest(folder, n, model.config.encoder.hidden_size, dtype, fingerprint, files, bounds)
            if accelerator is not None:
                accelerator.wait_for_everyone()
            index = cls.load(folder)
            index.ids = list(tokenizer.entity_ids)
            return index
        if world > 1:
            from accelerate.utils import gather_object

            for part in gather_object([local]):
                local.update(part)
        shards = [local[i] for i in range(len(bounds))]
        if len(shards) == 1 and shards[0].shape[0] == 0:
            shards = [torch.zeros(0, model.config.encoder.hidden_size, dtype=dtype)]
        return cls(shards, degrees, list(tokenizer.entity_ids), fingerprint)

    # ------------------------------------------------------------------ saving and loading
    def save(self, save_directory: str | os.PathLike, shard_size: int | None = None) -> list[str]:
        """Writes the index into `save_directory`: one `entity_index.safetensors` for up to `shard_size` rows
        (default `DEFAULT_SHARD_SIZE`), else shards and the manifest. Files of an older save there are replaced.
        Returns the file names written."""
        shard_size = DEFAULT_SHARD_SIZE if shard_size is None else shard_size
        folder = os.fspath(save_directory)
        os.makedirs(folder, exist_ok=True)
        meta = {"num_entities": str(self.num_entities)}
        if self.weights_sha256:
            meta["weights_sha256"] = self.weights_sha256
        _remove_index_files(folder, keep=())
        if self.num_entities <= int(shard_size):
            _save_file({"keys": self.keys, "degrees": self.degrees}, os.path.join(folder, ENTITY_INDEX_FILE), meta)
            return [ENTITY_INDEX_FILE]
        bounds = [
            (s, min(s + int(shard_size), self.num_entities)) for s in range(0, self.num_entities, int(shard_size))
        ]
        files = [shard_file_name(i + 1, len(bounds)) for i in range(len(bounds))]
        for name, (start, stop) in zip(files, bounds):
            keys = self._slice(start, stop)
            shard_meta = {**meta, "start": str(start), "stop": str(stop)}
            _save_file({"keys": keys, "degrees": self.degrees[start:stop]}, os.path.join(folder, name), shard_meta)
        _write_manifest(folder, self.num_entities, self.hidden_size, self.dtype, self.weights_sha256, files, bounds)
        return files + [MANIFEST_FILE]

    def _slice(self, start: int, stop: int) -> torch.Tensor:
        parts = []
        for first, tile in self.tiles():
            lo, hi = max(start, first), min(stop, first + tile.shape[0])
            if lo < hi:
                parts.append(tile[lo - first : hi - first])
        return torch.cat(parts, 0) if len(parts) > 1 else parts[0]

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> EntityIndex:
        """The index saved in folder `path` (or the single file `path`); memory-mapped unless `mmap=False`.

        Raises `FileNotFoundError` where there is none and `EntityIndexError` for a damaged or malformed one.
        """
        path = os.fspath(path)
        if os.path.isdir(path):
            manifest = os.path.join(path, MANIFEST_FILE)
            if os.path.isfile(manifest):
                return cls._load_sharded(path, manifest, mmap)
            path = os.path.join(path, ENTITY_INDEX_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No entity index at {path}.")
        tensors, meta = read_safetensors(path, mmap=mmap)
        keys = _checked_keys(tensors, path)
        return cls(keys, _checked_degrees(tensors, keys.shape[0], path), None, meta.get("weights_sha256"))

    @classmethod
    def _load_sharded(cls, folder: str, manifest_path: str, mmap: bool) -> EntityIndex:
        try:
            with open(manifest_path, encoding="utf-8") as handle:
                manifest = json.load(handle)
            shards = manifest["shards"]
            n = int(manifest["num_entities"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise EntityIndexError(
                f"{manifest_path} is not an entity-index manifest ({type(err).__name__}: {err})"
            ) from err
        keys, degrees, expected = [], [], 0
        for shard in shards:
            path = os.path.join(folder, os.path.basename(str(shard.get("file", ""))))
            if not os.path.isfile(path):
                raise EntityIndexError(
                    f"{manifest_path} lists {shard.get('file')!r}, which is missing: the index is incomplete; build it again."
                )
            tensors, _ = read_safetensors(path, mmap=mmap)
            part = _checked_keys(tensors, path)
            if int(shard.get("start", -1)) != expected or int(shard.get("stop", -1)) != expected + part.shape[0]:
                raise EntityIndexError(
                    f"{path} holds {part.shape[0]} rows, not rows {shard.get('start')}:{shard.get('stop')} as {manifest_path} says."
                )
            expected += part.shape[0]
            keys.append(part)
            degrees.append(_checked_degrees(tensors, part.shape[0], path))
        if expected != n or not keys:
            raise EntityIndexError(f"{manifest_path} promises {n} entities, its shards hold {expected}.")
        return cls(keys, torch.cat(degrees), manifest.get("ids"), manifest.get("weights_sha256"))

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, mmap: bool = True, **hub_kwargs: Any) -> EntityIndex | None:
        """The index saved with a model: in its local folder, or downloaded from its Hub repo (`hub_kwargs`:
        `revision`, `token`, ...). None where it has none; `EntityIndexError` where it is damaged; a failed
        download raises (a process that silently encodes while the others load would hang a multi-process run)."""
        source = os.fspath(source)
        if os.path.isdir(source):
            has_index = os.path.isfile(os.path.join(source, MANIFEST_FILE)) or os.path.isfile(
                os.path.join(source, ENTITY_INDEX_FILE)
            )
            return cls.load(source, mmap=mmap) if has_index else None
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HFValidationError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )

        absent = (EntryNotFoundError, RepositoryNotFoundError, HFValidationError) + (
            (LocalEntryNotFoundError,) if constants.HF_HUB_OFFLINE else ()
        )
        try:
            manifest = hf_hub_download(source, MANIFEST_FILE, **hub_kwargs)
        except absent:
            manifest = None
        if manifest is not None:
            with open(manifest, encoding="utf-8") as handle:
                names = [os.path.basename(str(s.get("file", ""))) for s in json.load(handle).get("shards", [])]
            for name in names:
                hf_hub_download(source, name, **hub_kwargs)  # into the same snapshot folder as the manifest
            return cls.load(os.path.dirname(manifest), mmap=mmap)
        try:
            path = hf_hub_download(source, ENTITY_INDEX_FILE, **hub_kwargs)
        except absent:
            return None
        return cls.load(path, mmap=mmap)

    # ------------------------------------------------------------------ scoring and search
    def _key_tile_rows(self, query_rows: int, memory_mb: float) -> int:
        # one (queries x tile) score block plus the tile in fp32
        return max(1, int(memory_mb * 2**20 / 4 / (max(query_rows, 1) + self.hidden_size)))

    @torch.no_grad()
    def scores(
        self,
        model: torch.nn.Module,
        query_embeddings: torch.Tensor,
        query_entity_ids: torch.Tensor,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Scores `(B, N)` of every query against every entity, tile by tile through `model.score_all`, in fp32 unless
        `dtype` asks for an autocast dtype. The caller bounds B (`rank_link_prediction` does, by memory)."""
        device = query_embeddings.device
        out = torch.empty(query_embeddings.shape[0], self.num_entities, device=device)
        tiles, unit = self._scoring_tiles(model, self._key_tile_rows(query_embeddings.shape[0], 256))
        for start, tile in tiles:
            out[:, start : start + tile.shape[0]] = _match(
                model, query_embeddings, query_entity_ids, tile, start, dtype, unit
            )
        return out

    @torch.no_grad()
    def search(
        self,
        model: torch.nn.Module,
        query_embeddings: torch.Tensor,
        query_entity_ids: torch.Tensor,
        top_k: int = 10,
        exclude: Sequence[Sequence[int] | np.ndarray] | None = None,
        memory_mb: float = 256,
        query_batch_size: int = 256,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-k: `(scores, rows)`, each `(B, top_k)`, best first, over all entities, in tiles of queries x keys
        with a running top-k per query, so peak memory is about `memory_mb` whatever B and N. Rows past the number
        of candidates are -1 with score -inf.

        Args:
            exclude (*optional*): per query, entity rows never returned (e.g. its known answers).
        """
        top_k = int(top_k)
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}.")
        device = query_embeddings.device
        b = query_embeddings.shape[0]
        if exclude is not None and len(exclude) != b:
            raise ValueError(f"`exclude` holds {len(exclude)} lists for {b} queries.")
        best_scores = torch.full((b, top_k), float("-inf"), device=device)
        best_rows = torch.full((b, top_k), -1, dtype=torch.long, device=device)
        for q0 in range(0, b, query_batch_size):
            q = query_embeddings[q0 : q0 + query_batch_size]
            q_ent = query_entity_ids[q0 : q0 + query_batch_size]
            ex_rows, ex_cols = _exclusion_pairs(
                exclude[q0 : q0 + query_batch_size] if exclude is not None else None, device
            )
            values = best_scores[q0 : q0 + query_batch_size]
            rows = best_rows[q0 : q0 + query_batch_size]
            tiles, unit = self._scoring_tiles(model, self._key_tile_rows(q.shape[0], memory_mb))
            for start, tile in tiles:
                block = _match(model, q, q_ent, tile, start, None, unit)
                if ex_cols is not None:
                    inside = (ex_cols >= start) & (ex_cols < start + tile.shape[0])
                    block[ex_rows[inside], ex_cols[inside] - start] = float("-inf")
                tile_values, tile_rows = block.topk(min(top_k, tile.shape[0]), dim=1)
                values, order = torch.cat([values, tile_values], 1).topk(top_k, dim=1)
                rows = torch.cat([rows, tile_rows + start], 1).gather(1, order)
            rows[torch.isinf(values) & (values < 0)] = -1
            best_scores[q0 : q0 + query_batch_size], best_rows[q0 : q0 + query_batch_size] = values, rows
        return best_scores, best_rows

    def build_faiss(self, kind: str = "hnsw", **options: Any) -> FaissSearcher:
        """An approximate searcher over these keys (see `FaissSearcher.build`)."""
        return FaissSearcher.build(self, kind, **options)

    def __repr__(self) -> str:
        return (
            f"EntityIndex(num_entities={self.num_entities}, hidden_size={self.hidden_size}, dtype={self.dtype}, "
            f"shards={len(self._shards)}, weights_sha256={(self.weights_sha256 or 'unknown')[:12]})"
        )


def _match(model, q, q_ent, tile, start, dtype, unit_keys: bool = False):
    """Scores `(B, tile rows)` of the queries against one tile of keys: the model's one ranking entry point,
    `score_all`, with each candidate's own row as its entity id (for its degree and the own-entity offset)."""
    ids = torch.arange(start, start + tile.shape[0], device=q.device)
    keys = tile.to(device=q.device, dtype=q.dtype)
    return model.score_all(q, q_ent, keys, ids, dtype=dtype, unit_keys=unit_keys).float()


def _tiles(starts, shards, max_rows) -> Iterator[tuple[int, torch.Tensor]]:
    for first, shard in zip(starts[:-1].tolist(), shards):
        step = shard.shape[0] if max_rows is None else max(1, int(max_rows))
        for offset in range(0, shard.shape[0], step):
            yield first + offset, shard[offset : offset + step]


def _unit_keys(shard: torch.Tensor) -> torch.Tensor:
    """The rows of `shard` scaled to unit length (in fp32, as the cosine scorer normalises), stored in the shard's
    own dtype: an fp16 / bf16 index keeps its half-size footprint (a 1M x 384 fp16 index: 0.74 GB more, not 1.5)."""
    return F.normalize(shard.float(), dim=-1).to(shard.dtype)


def _exclusion_pairs(exclude, device):
    if exclude is None:
        return None, None
    lists = [np.asarray(e, dtype=np.int64).reshape(-1) for e in exclude]
    if not any(len(e) for e in lists):
        return None, None
    rows = np.repeat(np.arange(len(lists)), [len(e) for e in lists])
    return torch.as_tensor(rows, device=device), torch.as_tensor(np.concatenate(lists), device=device)


def _storage_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, str):
        if dtype not in STORAGE_DTYPES:
            raise ValueError(f"Entity index dtype {dtype!r} is not one of {sorted(STORAGE_DTYPES)}.")
        return STORAGE_DTYPES[dtype]
    if dtype not in STORAGE_DTYPES.values():
        raise ValueError(f"Entity index dtype {dtype} is not one of {sorted(STORAGE_DTYPES)}.")
    return dtype


def _checked_keys(tensors: dict, path: str) -> torch.Tensor:
    keys = tensors.get("keys")
    if keys is None or keys.dim() != 2 or not keys.is_floating_point():
        shape = None if keys is None else (tuple(keys.shape), str(keys.dtype))
        raise EntityIndexError(f"{path} holds no (num_entities, hidden) float tensor 'keys' (got {shape}).")
    return keys


def _checked_degrees(tensors: dict, n: int, path: str) -> torch.Tensor:
    degrees = tensors.get("degrees")
    if degrees is None:
        return torch.zeros(n)
    if degrees.numel() != n:
        raise EntityIndexError(f"{path} holds {degrees.numel()} degrees for {n} keys.")
    return degrees.float().view(-1)


def _finished_shard(path: str, start: int, stop: int, fingerprint: str, dtype: torch.dtype) -> bool:
    if not os.path.isfile(path):
        return False
    try:
        tensors, meta = read_safetensors(path)
    except (EntityIndexError, OSError):
        return False
    keys = tensors.get("keys")
    return (
        meta.get("weights_sha256") == fingerprint
        and meta.get("start") == str(start)
        and meta.get("stop") == str(stop)
        and keys is not None
        and keys.dtype == dtype
        and keys.shape[0] == stop - start
    )


def _write_manifest(folder, n, hidden, dtype, fingerprint, files, bounds) -> None:
    manifest = {
        "format": "lmke_hf.entity_index/1",
        "num_entities": n,
        "hidden_size": hidden,
        "dtype": str(dtype).replace("torch.", ""),
        "weights_sha256": fingerprint,
        "shards": [{"file": f, "start": a, "stop": b} for f, (a, b) in zip(files, bounds)],
    }
    partial = os.path.join(folder, MANIFEST_FILE + ".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1)
    os.replace(partial, os.path.join(folder, MANIFEST_FILE))
    _remove_index_files(folder, keep=(MANIFEST_FILE, *files))  # an older single file or other shards would mislead


def _remove_index_files(folder: str, keep: Sequence[str]) -> None:
    for name in os.listdir(folder):
        if name in keep:
            continue
        if name in (ENTITY_INDEX_FILE, MANIFEST_FILE) or (
            name.startswith("entity_index-") and name.endswith(".safetensors")
        ):
            os.remove(os.path.join(folder, name))


# ---------------------------------------------------------------------------------------------------------------
# Approximate search (FAISS)
# ---------------------------------------------------------------------------------------------------------------


def _import_faiss():
    try:
        import faiss
    except ImportError as err:
        raise ImportError('Approximate search needs FAISS: pip install "lmke_hf[faiss]" (faiss-cpu).') from err
    return faiss


class FaissSearcher:
    """Approximate top-k through a FAISS index over the unit-length keys (inner product = cosine), re-scored exactly.

    The FAISS index proposes a shortlist of `shortlist` candidates per query by the cosine of the query and key
    embeddings; the model then scores the shortlist exactly (`model.score_all`: the cosine with the own-entity offset,
    or the paper's matcher), so the returned scores are the model's own. For cosine-scorer models the shortlist is
    the approximate top of the model's own ranking (the query's own entity is always added, since its offset may
    lift it); for matcher models it is a cosine prefilter, whose recall the benchmark measures.

    Kinds: `"flat"` (exact inner product, for checking), `"ivf"` (`nlist` clusters, `nprobe` searched),
    `"hnsw"` (graph with `hnsw_m` links, `ef_search` breadth).

    The searcher records the `weights_sha256` of the entity index it was built from (saved in its `.json` sidecar);
    searching with an index of other weights raises, since its shortlists would come from stale keys.
    """

    def __init__(self, index: Any, kind: str, params: dict[str, Any], weights_sha256: str | None = None) -> None:
        self.index, self.kind, self.params = index, kind, dict(params)
        self.weights_sha256 = weights_sha256

    @classmethod
    def build(
        cls,
        entity_index: EntityIndex,
        kind: str = "hnsw",
        *,
        nlist: int | None = None,
        nprobe: int = 32,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 128,
        train_size: int = 100_000,
        seed: int = 0,
        batch_rows: int = 65_536,
    ) -> FaissSearcher:
        faiss = _import_faiss()
        d, n = entity_index.hidden_size, entity_index.num_entities
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
            params = {}
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(ef_construction)
            index.hnsw.efSearch = int(ef_search)
            params = {"hnsw_m": int(hnsw_m), "ef_construction": int(ef_construction), "ef_search": int(ef_search)}
        elif kind == "ivf":
            nlist = int(nlist or max(1, min(n // 39, int(4 * np.sqrt(n)))))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = np.random.default_rng(seed).choice(n, size=min(n, max(int(train_size), 39 * nlist)), replace=False)
            index.train(_unit_rows(entity_index.rows(np.sort(sample))))
            index.nprobe = int(nprobe)
            params = {"nlist": nlist, "nprobe": int(nprobe)}
        else:
            raise ValueError(f"FAISS index kind {kind!r} is not one of 'flat', 'ivf', 'hnsw'.")
        for _, tile in entity_index.tiles(batch_rows):
            index.add(_unit_rows(tile))
        return cls(index, kind, params, entity_index.weights_sha256)

    def configure(self, *, ef_search: int | None = None, nprobe: int | None = None) -> FaissSearcher:
        """Sets the search breadth without rebuilding: `ef_search` for HNSW, `nprobe` for IVF (the speed / recall
        trade-off; `benchmarks/bench_scale.py` sweeps both). Returns the searcher; raises ValueError for a setting
        this kind of index does not have."""
        for name, value, kind in (("ef_search", ef_search, "hnsw"), ("nprobe", nprobe, "ivf")):
            if value is None:
                continue
            if self.kind != kind:
                raise ValueError(f"`{name}` tunes {kind} indexes; this FAISS index is {self.kind!r}.")
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
            if kind == "hnsw":
                self.index.hnsw.efSearch = int(value)
            else:
                self.index.nprobe = int(value)
            self.params[name] = int(value)
        return self

    def save(self, path: str | os.PathLike) -> None:
        """Writes the FAISS index to `path` and its sidecar `path.json` (kind, parameters, number of keys and the
        `weights_sha256` of the entity index it was built from)."""
        faiss = _import_faiss()
        path = os.fspath(path)
        faiss.write_index(self.index, path + ".partial")
        os.replace(path + ".partial", path)
        info = {
            "kind": self.kind,
            "params": self.params,
            "ntotal": int(self.index.ntotal),
            "weights_sha256": self.weights_sha256,
        }
        with open(path + ".json", "w", encoding="utf-8") as handle:
            json.dump(info, handle)

    @classmethod
    def load(cls, path: str | os.PathLike, entity_index: EntityIndex | None = None) -> FaissSearcher:
        """The searcher saved at `path`; with `entity_index`, checked to be built from its keys (see `check`)."""
        faiss = _import_faiss()
        path = os.fspath(path)
        with open(path + ".json", encoding="utf-8") as handle:
            info = json.load(handle)
        index = faiss.read_index(path)
        if info["kind"] == "hnsw":
            index.hnsw.efSearch = int(info["params"]["ef_search"])
        elif info["kind"] == "ivf":
            index.nprobe = int(info["params"]["nprobe"])
        searcher = cls(index, info["kind"], info["params"], info.get("weights_sha256"))
        if searcher.weights_sha256 is None:
            logger.warning(
                f"{path}.json records no weights_sha256 (saved by an older lmke_hf): the FAISS index cannot be "
                "checked against the entity index; rebuild it with `lmke-hf index --model <model> --faiss "
                f"{searcher.kind}`."
            )
        if entity_index is not None:
            searcher.check(entity_index)
        return searcher

    def check(self, entity_index: EntityIndex) -> None:
        """Raises ValueError unless this FAISS index was built from `entity_index`'s keys: as many keys, and the same
        `weights_sha256` wherever both record one."""
        if self.index.ntotal != entity_index.num_entities:
            raise ValueError(
                f"This FAISS index holds {self.index.ntotal} keys, the entity index {entity_index.num_entities}: build it again."
            )
        ours, theirs = self.weights_sha256, entity_index.weights_sha256
        if ours is not None and theirs is not None and ours != theirs:
            raise ValueError(
                f"This FAISS index was built from an entity index of other weights (weights_sha256 {ours}) than the "
                f"entity index searched (weights_sha256 {theirs}): its shortlists would come from stale keys. Rebuild it "
                f"with `lmke-hf index --model <model> --faiss {self.kind}` (or `entity_index.build_faiss({self.kind!r})`)."
            )

    @torch.no_grad()
    def search(
        self,
        model: torch.nn.Module,
        entity_index: EntityIndex,
        query_embeddings: torch.Tensor,
        query_entity_ids: torch.Tensor,
        top_k: int = 10,
        exclude: Sequence[Sequence[int] | np.ndarray] | None = None,
        shortlist: int | None = None,
        query_batch_size: int = 64,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Approximate top-k `(scores, rows)` like `EntityIndex.search`: a shortlist of `shortlist` (default
        `max(4 * top_k, 50)`, plus the number excluded) by FAISS, re-scored exactly by the model, `query_batch_size`
        queries at a time against the union of their shortlists. Raises ValueError where this FAISS index was not
        built from `entity_index` (`check`)."""
        self.check(entity_index)
        top_k = int(top_k)
        b = query_embeddings.shape[0]
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        size = min(entity_index.num_entities, int(shortlist or max(4 * top_k, 50)) + extra)
        _, found = self.index.search(_unit_rows(query_embeddings), size)
        own = query_entity_ids.view(-1, 1).cpu().numpy()
        own = np.where((found == own).any(1, keepdims=True), -1, own)  # listed once
        candidates = np.concatenate([found, own], 1)  # the own entity's offset may lift it above the shortlist
        if exclude is not None:
            for i, rows in enumerate(exclude):
                candidates[i, np.isin(candidates[i], np.asarray(rows, dtype=np.int64))] = -1
        cosine = getattr(model.config, "scorer", None) == "cosine"
        values, rows = [], []
        for q0 in range(0, b, query_batch_size):  # all queries of a block against the union of their shortlists
            part = candidates[q0 : q0 + query_batch_size]
            union, where = np.unique(np.where(part >= 0, part, np.iinfo(np.int64).max), return_inverse=True)
            where = where.reshape(part.shape)
            valid = union < entity_index.num_entities
            keys = entity_index.rows(union[valid])
            if cosine:  # the very unit keys exact search ranks (normalised in fp32, stored in the index's dtype)
                keys = _unit_keys(keys)
            scores = model.score_all(
                query_embeddings[q0 : q0 + query_batch_size],
                query_entity_ids[q0 : q0 + query_batch_size],
                keys.to(device=query_embeddings.device, dtype=query_embeddings.dtype),
                torch.as_tensor(union[valid], device=query_embeddings.device),
                unit_keys=cosine,
            ).float()
            scores = torch.cat([scores, scores.new_full((scores.shape[0], 1), float("-inf"))], 1)  # the column of -1s
            mine = torch.as_tensor(np.where(part >= 0, where, int(valid.sum())), device=scores.device)
            mine_scores = scores.gather(1, mine)
            ids = torch.as_tensor(part, device=scores.device)
            k = min(top_k, mine_scores.shape[1])
            v, o = mine_scores.topk(k, dim=1)
            r = ids.gather(1, o)
            r[torch.isinf(v) & (v < 0)] = -1
            if k < top_k:
                v = torch.cat([v, v.new_full((v.shape[0], top_k - k), float("-inf"))], 1)
                r = torch.cat([r, r.new_full((r.shape[0], top_k - k), -1)], 1)
            values.append(v)
            rows.append(r)
        return torch.cat(values), torch.cat(rows)


def _unit_rows(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(F.normalize(tensor.detach().float().cpu(), dim=-1).numpy(), dtype=np.float32)


__all__ = ["EntityIndex", "EntityIndexError", "FaissSearcher", "read_safetensors"]
