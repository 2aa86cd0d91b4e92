"""Type stubs of the native module (the engine's bindings). Use the ``colbert_index`` API."""

from os import PathLike
from typing import Callable, List, Optional, Sequence, Tuple, TypedDict, Union

import numpy as np
import numpy.typing as npt

_Path = Union[str, PathLike[str]]
_Hits = List[Tuple[str, float]]

class BuildKnobs(TypedDict):
    nbits: int
    store_f16: bool
    warp_layout: bool
    centroids: Optional[int]
    sample_docs: Optional[int]
    train_memory_mib: Optional[int]
    kmeans_iters: int
    seed: int
    codec: str
    kernels: str
    overwrite: bool

class ColbertIndexError(Exception): ...
class IndexBusyError(ColbertIndexError): ...
class CorruptIndexError(ColbertIndexError): ...
class DuplicateIdError(ColbertIndexError): ...

def build_embeddings(
    path: _Path,
    embeddings: Union[npt.NDArray[np.float32], npt.NDArray[np.float16]],
    doclens: npt.NDArray[np.int64],
    ids: Optional[List[str]],
    knobs: BuildKnobs,
    progress: Optional[Callable[[str, int, int], None]] = None,
) -> None: ...
def build_texts(
    path: _Path,
    texts: List[str],
    ids: Optional[List[str]],
    model: _Path,
    batch_size: int,
    knobs: BuildKnobs,
    progress: Optional[Callable[[str, int, int], None]] = None,
) -> None: ...
def read_collection(path: _Path) -> Tuple[List[str], List[str], int]: ...

class NativeIndex:
    @staticmethod
    def open(path: _Path) -> NativeIndex: ...
    @property
    def path(self) -> str: ...
    @property
    def dim(self) -> int: ...
    def __len__(self) -> int: ...
    def info_json(self) -> str: ...
    def search(
        self,
        queries: Union[Sequence[str], Sequence[npt.NDArray[np.float32]]],
        k: int,
        ncells: Optional[int] = None,
        threshold: Optional[float] = None,
        ndocs: Optional[int] = None,
        exhaustive: bool = False,
        mode: str = "auto",
        nprobe: Optional[int] = None,
        warp_rescore: Optional[int] = None,
    ) -> List[_Hits]: ...
    def rerank(
        self, query: Union[str, npt.NDArray[np.float32]], candidates: List[str], k: int
    ) -> Tuple[_Hits, List[str]]: ...
    def add(
        self,
        embeddings: Union[npt.NDArray[np.float32], npt.NDArray[np.float16]],
        doclens: npt.NDArray[np.int64],
        ids: List[str],
        replace: bool = False,
    ) -> Tuple[int, List[str]]: ...
    def add_texts(self, texts: List[str], ids: List[str], replace: bool = False) -> Tuple[int, List[str]]: ...
    def delete(self, ids: List[str]) -> Tuple[List[str], List[str]]: ...
    def compact(self, warp_layout: Optional[bool] = None) -> Tuple[int, int]: ...
    def prepare_warp(self) -> int: ...
    @property
    def stored_warp_bytes(self) -> int: ...
    def reload(self) -> None: ...
    def verify(self) -> None: ...
