"""The Inter-X test split on disk (Inter-X's released ``processed_data``), its motion layout, and a
tiny synthetic dataset in the same layout.

Layout (Inter-X's README "Data preprocessing", as ``evaluation/text2motion`` reads it from
``./dataset/inter-x``; the file names are the ``interx`` protocol preset's ``[split]``)::

    DIR/splits/test.txt                   motion ids, one a line
    DIR/motions/test.h5                   one HDF5 dataset per id: (T, 56, 6) float32 at 30 fps
    DIR/texts_processed/<id>.txt          lines ``caption#word/POS word/POS ...#0.0#0.0``
    DIR/glove/hhi_vab_data.npy            (V, 300) GloVe vectors of the vocabulary
    DIR/glove/hhi_vab_words.pkl           the V words (a pickled list of str)
    DIR/glove/hhi_vab_idx.pkl             word -> row (a pickled dict of str -> int)

A motion's 56 rows (``preprocess/1_prepare_data.py``): SMPL-X axis-angles of the root, 21 body
joints, jaw, two eyes, 15 + 15 hand joints, then the root translation; its 6 columns are person
1's x, y, z then person 2's. The evaluator reads each rotation as the first two rows of its
matrix (6D) and the translation row as ``[t1, 0, 0, 0, t2, 0, 0, 0]``: (T, 56, 12) -> 672
features a frame (``data/dataset.py`` ``to_rot_6d``). A generator in Inter-X's representation
(DHVAE's ``eval/interx/utils.py``: the model returns (B, T, 56, 12), split in two people on the
last axis) writes per person 56 x 6 = 336 features: 55 6D rotations, then the translation and
the root velocity, which the evaluator zeroes (``prepare_motion``).

Like the public loader, motions shorter than 24 frames or of 1000 and more are left out, a motion
is cut to a multiple of 4 frames (``unit_length``) and to 150 frames. The pickles are read with
an unpickler that builds nothing but lists, dicts, strings and numbers.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from motionfleet.common.text import builtin_prompts
from motionfleet.core.errors import MissingFile

JOINT_ROWS = 56  # 55 SMPL-X rotations + the root translation
ROTATIONS = JOINT_ROWS - 1
CHANNELS = 6  # per person: a 6D rotation (generated) or two people's axis-angles (the dataset)
FEATURES_PER_PERSON = JOINT_ROWS * CHANNELS  # 336: one person of a generated frame
EVALUATOR_FEATURES = JOINT_ROWS * 2 * CHANNELS  # 672: the evaluator's dim_pose
MIN_FRAMES = 24  # data/dataset.py Text2MotionDatasetV2HHI: min_motion_len for 'hhi'
TOO_LONG = 1000
UNIT_LENGTH = 4
MAX_FRAMES = 150  # max_motion_length
MAX_TEXT_TOKENS = 35  # max_text_len
GLOVE_PREFIX = "hhi_vab"
WORD_DIM = 300


@dataclass(frozen=True)
class TestMotion:
    name: str
    texts: tuple[str, ...]
    frames: int  # the evaluated length: a multiple of 4, at most 150


@dataclass(frozen=True)
class InterXSplit:
    root: Path
    motions: tuple[TestMotion, ...]
    left_out: tuple[tuple[str, str], ...]  # (id, reason)
    digest: str  # sha256 over ids, texts, motion bytes and the GloVe files
    tokens: dict  # caption -> its word/POS tokens (texts_processed)
    motion_file: Path

    def motion(self, name: str) -> np.ndarray:
        """(T, 56, 6) float32 axis-angles and translations of both people, the evaluated frames."""
        import h5py

        frames = next(m.frames for m in self.motions if m.name == name)
        with h5py.File(self.motion_file, "r") as file:
            return np.asarray(file[name][:frames], np.float32)


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_split(root: str | Path, test_file: str = "splits/test.txt", motion_file: str = "motions/test.h5",
               text_dir: str = "texts_processed", glove_dir: str = "glove") -> InterXSplit:
    """The motions ``test_file`` names that ``motion_file`` holds with a usable description (paths
    relative to ``root``: the protocol preset's ``[split]``)."""
    import h5py

    root = Path(root)
    split_file, motions_path = root / test_file, root / motion_file
    for path in (split_file, motions_path):
        if not path.is_file():
            raise MissingFile(f"{path} is missing: --dataset must be an Inter-X processed_data folder (docs/evaluate.md)")
    motions, left_out, digest = [], [], hashlib.sha256()
    tokens: dict[str, tuple[str, ...]] = {}
    try:
        file = h5py.File(motions_path, "r")
    except OSError as err:
        raise ValueError(f"{motions_path} is not a readable HDF5 file: {err}") from None
    with file:
        for name in sorted(set(_lines(split_file))):
            entry, reason = _read_entry(root / text_dir, file, name, tokens)
            if entry is None:
                left_out.append((name, reason))
                continue
            motions.append(entry)
            digest.update(name.encode() + b"\0" + "\n".join(entry.texts).encode() + b"\0")
            digest.update(np.ascontiguousarray(file[name][: entry.frames], np.float32).tobytes())
    if not motions:
        raise ValueError(f"{split_file} names no usable motion ({len(left_out)} left out)")
    for path in glove_files(root / glove_dir):
        digest.update(path.read_bytes() if path.is_file() else b"")
    return InterXSplit(root, tuple(motions), tuple(left_out), digest.hexdigest(), tokens, motions_path)


def _read_entry(text_dir: Path, file, name: str, tokens: dict) -> tuple[TestMotion | None, str]:
    if name not in file:
        return None, "not in the motion file"
    shape = file[name].shape
    if len(shape) != 3 or shape[1:] != (JOINT_ROWS, CHANNELS):
        return None, f"motion shape {shape}, expected (T, {JOINT_ROWS}, {CHANNELS})"
    if not MIN_FRAMES <= shape[0] < TOO_LONG:
        return None, f"{shape[0]} frames, outside [{MIN_FRAMES}, {TOO_LONG})"
    path = text_dir / f"{name}.txt"
    if not path.is_file():
        return None, f"missing {path.name}"
    texts = []
    for line in _lines(path):
        fields = line.split("#")
        if len(fields) != 4:
            return None, f"{path.name}: a line is not caption#tokens#start#end"
        if float(fields[2]) != 0.0 or float(fields[3]) != 0.0:
            return None, f"{path.name}: a description of a sub-span (the public loader stops there)"
        texts.append(fields[0])
        tokens[fields[0]] = tuple(fields[1].split(" "))
    if not texts:
        return None, "no description"
    return TestMotion(name, tuple(texts), min(shape[0] // UNIT_LENGTH * UNIT_LENGTH, MAX_FRAMES)), ""


# --- the evaluator's feature layout ----------------------------------------------------------


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) through the unit quaternion [cos(a/2), sin(a/2) n] (a = |v|, n = v/a;
    sin(a/2)/a by its Taylor series 1/2 - a^2/48 below 1e-6)."""
    angle = axis_angle.norm(dim=-1, keepdim=True)
    half = angle * 0.5
    small = angle.abs() < 1e-6
    ratio = torch.where(small, 0.5 - angle * angle / 48, torch.sin(half) / torch.where(small, torch.ones_like(angle), angle))
    quaternion = torch.cat([torch.cos(half), axis_angle * ratio], dim=-1)
    r, i, j, k = quaternion.unbind(-1)
    two_s = 2.0 / (quaternion * quaternion).sum(-1)
    matrix = torch.stack([1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
                          two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
                          two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j)], dim=-1)
    return matrix.reshape(*axis_angle.shape[:-1], 3, 3)


def dataset_features(motion: np.ndarray) -> torch.Tensor:
    """(T, 56, 6) dataset motion -> (T, 672): each person's rotations as 6D (the matrix's first two
    rows), side by side per joint, then the translations as [t1, 0, t2, 0]."""
    values = torch.from_numpy(np.asarray(motion, np.float32))
    frames = len(values)
    people = [axis_angle_to_matrix(values[:, :ROTATIONS, 3 * p : 3 * p + 3])[..., :2, :].reshape(frames, ROTATIONS, 6)
              for p in range(2)]
    translation = torch.zeros(frames, 1, 2 * CHANNELS)
    translation[:, 0, 0:3], translation[:, 0, 6:9] = values[:, ROTATIONS, 0:3], values[:, ROTATIONS, 3:6]
    return torch.cat([torch.cat(people, dim=-1), translation], dim=1).reshape(frames, EVALUATOR_FEATURES)


def generated_features(motion: torch.Tensor) -> torch.Tensor:
    """(2, T, 336) generated motion -> (T, 672): the two people side by side per row, the root
    velocities (columns 3:6 and 9:12 of the translation row) zeroed."""
    frames = motion.shape[1]
    joined = torch.cat([motion[p].reshape(frames, JOINT_ROWS, CHANNELS) for p in range(2)], dim=-1).clone()
    joined[:, -1, 3:6] = 0
    joined[:, -1, 9:12] = 0
    return joined.reshape(frames, EVALUATOR_FEATURES)


# --- the evaluator's text input --------------------------------------------------------------

# utils/word_vectorizer.py: POS_enumerator, and the words whose one-hot is a "VIP" class instead
POS_CLASSES = ("VERB", "NOUN", "DET", "ADP", "NUM", "AUX", "PRON", "ADJ", "ADV", "Loc_VIP", "Body_VIP", "Obj_VIP",
               "Act_VIP", "Desc_VIP", "OTHER")
VIP_WORDS = {
    "Loc_VIP": ("left", "right", "clockwise", "counterclockwise", "anticlockwise", "forward", "back", "backward", "up",
                "down", "straight", "curve"),
    "Body_VIP": ("arm", "chin", "foot", "feet", "face", "hand", "mouth", "leg", "waist", "eye", "knee", "shoulder",
                 "thigh"),
    "Obj_VIP": ("stair", "dumbbell", "chair", "window", "floor", "car", "ball", "handrail", "baseball", "basketball"),
    "Act_VIP": ("walk", "run", "swing", "pick", "bring", "kick", "put", "squat", "throw", "hop", "dance", "jump", "turn",
                "stumble", "dance", "stop", "sit", "lift", "lower", "raise", "wash", "stand", "kneel", "stroll", "rub",
                "bend", "balance", "flap", "jog", "shuffle", "lean", "rotate", "spin", "spread", "climb"),
    "Desc_VIP": ("slowly", "carefully", "fast", "careful", "slow", "quickly", "happy", "angry", "sad", "happily",
                 "angrily", "sadly"),
}


def glove_files(folder: Path) -> tuple[Path, Path, Path]:
    data, words, index = (folder / f"{GLOVE_PREFIX}_{suffix}" for suffix in ("data.npy", "words.pkl", "idx.pkl"))
    return data, words, index


class _PlainData(pickle.Unpickler):
    """Lists, dicts, strings and numbers only: any class or function in the pickle is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it names {module}.{name}, not plain data")


def _plain_pickle(path: Path):
    try:
        return _PlainData(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise ValueError(f"{path} is not a pickled list or dict of words: {err}") from None


class WordVectorizer:
    """token ``word/POS`` -> (GloVe vector, POS one-hot), as ``utils/word_vectorizer.py``; a token
    that is not ``word/POS`` reads as ``unk/OTHER`` (DHVAE's ``eval/interx/utils.py`` fallback)."""

    def __init__(self, folder: str | Path):
        data, words, index = glove_files(Path(folder))
        for path in (data, words, index):
            if not path.is_file():
                raise MissingFile(f"{path} is missing: the Inter-X evaluator's text side reads the dataset's "
                                  f"glove/{GLOVE_PREFIX}_* files")
        vectors = np.load(data, allow_pickle=False).astype(np.float32)
        word_list, word_index = _plain_pickle(words), _plain_pickle(index)
        if vectors.ndim != 2 or not isinstance(word_list, list) or not isinstance(word_index, dict):
            raise ValueError(f"{folder}: expected (V, D) vectors, a word list and a word -> row dict")
        self.word2vec = {w: vectors[word_index[w]] for w in word_list}
        self.dim = vectors.shape[1]
        self.name = f"glove {GLOVE_PREFIX} sha256:{hashlib.sha256(data.read_bytes()).hexdigest()[:16]}"

    @staticmethod
    def pos_onehot(pos: str) -> np.ndarray:
        vector = np.zeros(len(POS_CLASSES), np.float32)
        vector[POS_CLASSES.index(pos if pos in POS_CLASSES else "OTHER")] = 1
        return vector

    def __getitem__(self, token: str) -> tuple[np.ndarray, np.ndarray]:
        parts = token.split("/")
        word, pos = parts if len(parts) == 2 else ("unk", "OTHER")
        if word not in self.word2vec:
            return self.word2vec["unk"], self.pos_onehot("OTHER")
        vip = next((key for key, words in VIP_WORDS.items() if word in words), None)
        return self.word2vec[word], self.pos_onehot(vip or pos)

    def encode(self, tokens: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, int]:
        """(37, D) word vectors, (37, 15) POS one-hots and the sentence length: ``sos`` + at most 35
        tokens + ``eos``, padded with ``unk`` (``Text2MotionDatasetV2HHI.__getitem__``)."""
        sentence = ["sos/OTHER", *tokens[:MAX_TEXT_TOKENS], "eos/OTHER"]
        length = len(sentence)
        sentence += ["unk/OTHER"] * (MAX_TEXT_TOKENS + 2 - length)
        words, pos = zip(*(self[token] for token in sentence))
        return np.stack(words), np.stack(pos), length


# --- a synthetic set -------------------------------------------------------------------------


def write_synthetic(root: str | Path, count: int = 16, frames: tuple[int, int] = (24, 40), seed: int = 0) -> Path:
    """A tiny dataset in the layout above: ``count`` motions of smooth random axis-angles and
    translations, two descriptions each from the built-in prompts (tokens: the lower-case words,
    tagged OTHER), seeded random 300-d vectors for their words. Deterministic in ``seed``."""
    import h5py

    root = Path(root)
    rng = np.random.default_rng(seed)
    prompts = builtin_prompts()
    for sub in ("splits", "motions", "texts_processed", "glove"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names, vocabulary = [], {"sos": 0, "eos": 1, "unk": 2}
    with h5py.File(root / "motions" / "test.h5", "w") as file:
        for i in range(count):
            name = f"G001T000A{i:03d}R000"
            length = int(rng.integers(frames[0], frames[1] + 1))
            walk = np.cumsum(rng.normal(0, 0.05, (length, JOINT_ROWS, CHANNELS)), axis=0) + rng.normal(0, 0.5, (JOINT_ROWS, CHANNELS))
            file.create_dataset(name, data=walk.astype(np.float32))
            lines = []
            for text in (prompts[(2 * i) % len(prompts)], prompts[(2 * i + 1) % len(prompts)]):
                words = ["".join(c for c in w if c.isalpha()) for w in text.lower().split()]
                words = [w for w in words if w]
                vocabulary.update({w: len(vocabulary) for w in words if w not in vocabulary})
                lines.append(f"{text}#{' '.join(f'{w}/OTHER' for w in words)}#0.0#0.0")
            (root / "texts_processed" / f"{name}.txt").write_text("\n".join(lines) + "\n")
            names.append(name)
    (root / "splits" / "test.txt").write_text("\n".join(names) + "\n")
    data, word_list, index = glove_files(root / "glove")
    np.save(data, rng.normal(0, 0.3, (len(vocabulary), WORD_DIM)).astype(np.float32))
    word_list.write_bytes(pickle.dumps(list(vocabulary)))
    index.write_bytes(pickle.dumps(vocabulary))
    return root
