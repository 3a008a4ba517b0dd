from typing import List, Optional, Tuple

import numpy as np

class JoinIndex:
    width: int
    n_rows: int
    n_keyed: int
    n_groups: int
    unique: bool
    layout: str
    def __init__(self, columns: List[np.ndarray], valid: Optional[np.ndarray] = ...) -> None: ...
    @property
    def nbytes(self) -> int: ...
    def probe(self, columns: List[np.ndarray], valid: Optional[np.ndarray] = ...,
              keep_unmatched: bool = ...) -> Tuple[Optional[np.ndarray], np.ndarray, int]: ...

class StringIndex:
    n: int
    n_strings: int
    codes: np.ndarray
    def __init__(self, offsets: np.ndarray, data: np.ndarray, valid: Optional[np.ndarray] = ...) -> None: ...
    @property
    def nbytes(self) -> int: ...
    def lookup(self, offsets: np.ndarray, data: np.ndarray, out: np.ndarray, valid: np.ndarray) -> None: ...
