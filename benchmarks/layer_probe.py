"""Does a linear probe on an intermediate layer of the edge model read answerability better than its p(yes)?

An experiment on the calibration split only (``bench/models/records-calibration.jsonl``). For every
(question, retrieved passage) of the records, the edge model (Qwen2.5-Coder-0.5B Q4_K_M, q8_0 KV cache,
as the edge runs it) reads the yes/no **probe** prompt exactly as the edge builds it
(:meth:`reading.reader.LlamaReader.passage_prompt` with :data:`reading.prompts.PROBE`, the passage cut to
``passage_chars``), prefix [system + passage] then suffix [question + task], as
:meth:`~reading.reader.LlamaReader.read_each` splits it. During that forward pass a llama.cpp eval callback
(``cb_eval``) copies the residual stream after chosen layers (ggml tensors ``l_out-<layer>``) at the last
prompt token: the position whose next token is the yes/no reply. The same pass gives p(yes), checked
against the recorded edge reading (same prompt, same numbers up to where the prefill was split).

Then, per layer: standardized features, L2 logistic regression per passage (label: the question has an
answer, or: the passage contains a gold answer), question score = max over its passages; 5-fold
cross-validation that never splits a question's passages; question-level out-of-fold AUROC for a fixed
grid of C and for C chosen by inner cross-validation; next to the recorded p(yes) max, the edge's combined
signals (logistic over the record's edge signals, same folds) and those signals plus the probe's score
(nested: the score the combiner is fitted on is itself out of fold). "auto" also picks the layer and the
label by inner CV, fold by fold. A bootstrap over questions gives 95% intervals of the AUROC differences.

Two fold schemes: **by question** (eval/calibrate.py's folds; held-out dev-a questions share the
calibration questions' articles) and **by article** (no article in two folds: what a probe carries to
documents it was not fitted on). A model-free control, a TF-IDF logistic on the question's words alone,
shows how much each scheme lets a model learn from the wording of other questions on the same articles.

Extraction is resumable (one ``.npy`` + ``.json`` pair per chunk of questions under ``<out>/chunks``);
``--timing N`` first times N passages with and without the callback (two contexts of one process,
interleaved passage by passage). One command reproduces everything::

    make bench-layer-probe   # = .venv/bin/python -m benchmarks.layer_probe --timing 40

Writes ``<out>/timing.json`` and ``<out>/results.json``; prints the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.markdown import replace_block
from eval.records import read_records
from eval.replay import record_edge_signals
from pipelines.settings import load_settings
from reading.model_manifest import DEFAULT_EDGE_MODEL
from reading.models import resolve_gguf, spec_for_path
from reading.prompts import PROBE, PROBE_TOP_LOGPROBS, Passage, p_yes
from reading.reader import LlamaReader
from reading.text import normalize_answer

DEFAULT_LAYERS = (3, 6, 9, 12, 15, 18, 21, 23)  # Qwen2.5-0.5B has 24 layers: 0..23 (23: the last, before the final norm)
C_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)  # by-article folds chose 1e-3, the lowest, of 1e-3..1
FOLDS = 5
SEED = 0  # the folds' seed, as eval/calibrate.py's
CHUNK = 25  # questions per saved chunk (75 probe passes, ~2.5 min at one thread)
BOOTSTRAP = 2000


# --- capturing layer outputs during llama.cpp's graph evaluation ---------------------------------
class LayerCapture:
    """A llama.cpp eval callback that keeps the last token's column of chosen layers' outputs.

    llama.cpp calls ``cb_eval(tensor, ask=True)`` for every node of the graph it schedules ("do you want
    this one?"); for the nodes answered True it computes the graph up to that node and calls again with
    ``ask=False``, when the tensor's data can be read. ``l_out-<il>`` is layer ``il``'s output (residual
    stream), ``[n_embd x n_tokens]`` float32; the last layer's holds only the output rows (the last token).

    :param layers: layer indices to keep.
    :param n_embd: the model's embedding width.
    """

    def __init__(self, layers: Sequence[int], n_embd: int = 0) -> None:
        import llama_cpp
        import llama_cpp.llama_cpp as lc

        self.layers = tuple(layers)
        self.n_embd = n_embd
        self._want = {f"l_out-{il}".encode(): il for il in self.layers}
        self.captured: dict[int, np.ndarray] = {}
        self.asked = 0
        # ggml's tensor functions: libggml-base, the library llama.cpp already loaded (same path, same handle).
        g = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
        g.ggml_get_name.restype, g.ggml_get_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
        g.ggml_nbytes.restype, g.ggml_nbytes.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
        g.ggml_nelements.restype, g.ggml_nelements.argtypes = ctypes.c_int64, [ctypes.c_void_p]
        g.ggml_backend_tensor_get.restype = None
        g.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
        self._g = g
        # The CFUNCTYPE object must outlive the context that calls it: kept here.
        self.callback = lc.ggml_backend_sched_eval_callback(self._on_tensor)

    def _on_tensor(self, tensor: int, ask: bool, _user_data: int) -> bool:
        name = self._g.ggml_get_name(tensor)
        if ask:
            self.asked += 1
            return name in self._want
        nbytes = self._g.ggml_nbytes(tensor)
        n = self._g.ggml_nelements(tensor)
        if nbytes != 4 * n or n % self.n_embd:  # not float32 [n_embd x n_tokens]: refuse loudly, do not guess
            raise RuntimeError(f"{name!r}: {n} elements in {nbytes} bytes, not float32 columns of {self.n_embd}")
        col = np.empty(self.n_embd, dtype=np.float32)
        # Contiguous column-major [n_embd x n_tokens]: the last token's column is the last n_embd floats.
        self._g.ggml_backend_tensor_get(tensor, col.ctypes.data, nbytes - 4 * self.n_embd, 4 * self.n_embd)
        self.captured[self._want[name]] = col
        # False aborts the graph's computation; so does an exception here (ctypes prints it and returns 0),
        # and llama_decode's failure then raises in Llama.eval.
        return True

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """While active, every llama.cpp context created gets this callback.

        ``Llama(...)`` takes no ``cb_eval``: it fills ``llama_context_default_params()`` and creates the
        context in its constructor, so the defaults are wrapped for the duration of that constructor.
        """
        import llama_cpp.llama_cpp as lc

        original = lc.llama_context_default_params

        def with_callback() -> Any:
            params = original()
            params.cb_eval = self.callback
            params.cb_eval_user_data = None
            return params

        lc.llama_context_default_params = with_callback
        try:
            yield
        finally:
            lc.llama_context_default_params = original


def load_reader(threads: int, capture: LayerCapture | None, kv_type: str = "q8_0", n_ctx: int = 2048) -> Any:
    """The edge model as the edge loads it (manifest file, verified size), with ``capture``'s callback if given."""

    path = resolve_gguf("", DEFAULT_EDGE_MODEL)
    spec = spec_for_path(path)
    reader = LlamaReader(str(path), n_ctx=n_ctx, n_threads=threads, family=spec.prompt_family if spec else "",
                         kv_type=kv_type, model_sha256=spec.sha256 if spec else "")
    with capture.installed() if capture is not None else contextlib.nullcontext():
        reader.warm_up()
    if capture is not None:
        capture.n_embd = reader._llm.n_embd()
    return reader


@dataclass
class ProbePass:
    """One probe prompt's forward pass: p(yes), the captured vectors and what it cost."""

    p_yes: float
    vectors: dict[int, np.ndarray]
    prefix_tokens: int
    suffix_tokens: int
    seconds: float


def probe_pass(reader: Any, capture: LayerCapture | None, question: str, title: str, text: str,
               passage_chars: int) -> ProbePass:
    """The edge's probe prompt for one passage, prefilled from an empty cache as the edge splits it.

    The prompt is :meth:`LlamaReader.passage_prompt` (PROBE task) tokenized as ``_prefixed`` does
    (prefix, then suffix without BOS); p(yes) as :func:`reading.passages.read_each` reads it: the top
    :data:`PROBE_TOP_LOGPROBS` logprobs of the first reply token.
    """

    pp = reader.passage_prompt(question, Passage(title, text[:passage_chars]), PROBE)
    prefix, suffix = reader._prefix_tokens(pp.prefix), reader._suffix_tokens(pp.suffix)
    llm = reader._llm
    t0 = time.perf_counter()
    llm.n_tokens = 0  # nothing reused: Llama.eval drops the cache from n_tokens on
    llm.eval(prefix)
    if capture is not None:
        capture.captured.clear()  # keep only the suffix's graph: its last token is the probe position
    llm.eval(suffix)
    top = reader._top(reader._last_logprobs(), PROBE_TOP_LOGPROBS)
    seconds = time.perf_counter() - t0
    vectors = dict(capture.captured) if capture is not None else {}
    if capture is not None and set(vectors) != set(capture.layers):
        raise RuntimeError(f"captured layers {sorted(vectors)}, wanted {list(capture.layers)}")
    return ProbePass(p_yes(top), vectors, len(prefix), len(suffix), seconds)


# --- records ---------------------------------------------------------------------------------------
def load_records(path: Path) -> list[dict[str, Any]]:
    """The calibration records, one per question id (a later line supersedes an earlier one), in file order."""

    return list(read_records(path).values())


def passage_has_gold(answers: Sequence[str], passage: str) -> bool:
    """Does the passage contain one of the gold answers (SQuAD-normalized substring)?"""

    hay = f" {normalize_answer(passage)} "
    return any(a.strip() and f" {normalize_answer(a)} " in hay for a in answers)


# --- extraction --------------------------------------------------------------------------------------
def _chunk_paths(out: Path, start: int) -> tuple[Path, Path]:
    return out / "chunks" / f"h-{start:05d}.npy", out / "chunks" / f"h-{start:05d}.json"


def extract(records: list[dict[str, Any]], out: Path, layers: Sequence[int], threads: int, passage_chars: int) -> None:
    """Capture every (question, passage) probe pass, chunk by chunk; finished chunks are skipped."""
    from rich.progress import Progress

    todo = []
    for start in range(0, len(records), CHUNK):
        ids = [r["id"] for r in records[start:start + CHUNK]]
        npy, meta = _chunk_paths(out, start)
        if meta.exists():
            m = json.loads(meta.read_text())
            if m["ids"] == ids and m["layers"] == list(layers) and m["passage_chars"] == passage_chars and npy.exists():
                continue
        todo.append(start)
    if not todo:
        return
    (out / "chunks").mkdir(parents=True, exist_ok=True)
    capture = LayerCapture(layers)
    reader = load_reader(threads, capture)
    with Progress() as progress:
        total = sum(len(r["passages"]) for s in todo for r in records[s:s + CHUNK])
        task = progress.add_task("probe passes", total=total)
        for start in todo:
            rows, vecs = [], []
            for r in records[start:start + CHUNK]:
                for j, (title, text) in enumerate(zip(r["titles"], r["passages"], strict=True)):
                    pas = probe_pass(reader, capture, r["question"], title, text, passage_chars)
                    vecs.append(np.stack([pas.vectors[il] for il in layers]).astype(np.float16))
                    rows.append({"id": r["id"], "passage": j, "p_yes": round(pas.p_yes, 6),
                                 "recorded_p_yes": r["edge"]["reading"]["passages"][j]["p_yes"],
                                 "prefix_tokens": pas.prefix_tokens, "suffix_tokens": pas.suffix_tokens,
                                 "seconds": round(pas.seconds, 4)})
                    progress.advance(task)
            npy, meta = _chunk_paths(out, start)
            np.save(npy.with_suffix(".tmp.npy"), np.stack(vecs))
            os.replace(npy.with_suffix(".tmp.npy"), npy)
            # The .json is written last: a chunk counts as done only once both files are whole.
            meta.with_suffix(".tmp").write_text(json.dumps({
                "ids": [r["id"] for r in records[start:start + CHUNK]], "layers": list(layers),
                "passage_chars": passage_chars, "threads": threads, "model": reader.name, "kv_type": reader.kv_type,
                "rows": rows}))
            os.replace(meta.with_suffix(".tmp"), meta)


@dataclass
class Hidden:
    """Every probe pass's captured vectors and its bookkeeping, in record order."""

    layers: tuple[int, ...]
    x: np.ndarray  # [n_passages, n_layers, n_embd] float16
    rows: list[dict[str, Any]] = field(default_factory=list)


def load_hidden(records: list[dict[str, Any]], out: Path, layers: Sequence[int]) -> Hidden:
    """The saved chunks of these records (all must be there: run the extraction first)."""
    xs, rows = [], []
    for start in range(0, len(records), CHUNK):
        npy, meta = _chunk_paths(out, start)
        m = json.loads(meta.read_text())
        if m["ids"] != [r["id"] for r in records[start:start + CHUNK]]:
            raise RuntimeError(f"{meta} holds other questions — delete {out / 'chunks'} and extract again")
        keep = [m["layers"].index(il) for il in layers]
        xs.append(np.load(npy)[:, keep])
        rows.extend(m["rows"])
    return Hidden(tuple(layers), np.concatenate(xs), rows)


# --- timing --------------------------------------------------------------------------------------------
def timing(records: list[dict[str, Any]], n: int, layers: Sequence[int], threads: int, passage_chars: int) -> dict[str, Any]:
    """Seconds per probe pass with and without the callback: two contexts in this one process, the same
    passages, alternating which goes first, so that load from other processes falls on both alike."""
    capture = LayerCapture(layers)
    with_cb = load_reader(threads, capture)
    plain = load_reader(threads, None)
    items = [(r["question"], t, p) for r in records for t, p in zip(r["titles"], r["passages"], strict=True)][:n]
    probe_pass(with_cb, capture, *items[0], passage_chars)  # warm both (first-call allocations)
    probe_pass(plain, None, *items[0], passage_chars)
    a, b, tokens, diffs = [], [], [], []
    for i, (q, title, text) in enumerate(items):
        order = [(with_cb, capture), (plain, None)][:: 1 if i % 2 == 0 else -1]
        res = {id(rd): probe_pass(rd, cap, q, title, text, passage_chars) for rd, cap in order}
        x, y = res[id(with_cb)], res[id(plain)]
        a.append(x.seconds)
        b.append(y.seconds)
        tokens.append(x.prefix_tokens + x.suffix_tokens)
        diffs.append(abs(x.p_yes - y.p_yes))
    out = {"passages": len(items), "threads": threads, "layers": list(layers),
           "mean_tokens": statistics.mean(tokens),
           "with_callback_s": {"mean": statistics.mean(a), "median": statistics.median(a)},
           "without_callback_s": {"mean": statistics.mean(b), "median": statistics.median(b)},
           "overhead_pct_of_means": 100.0 * (statistics.mean(a) / statistics.mean(b) - 1.0),
           "median_paired_overhead_pct": 100.0 * statistics.median(x / y - 1.0 for x, y in zip(a, b, strict=True)),
           "max_abs_p_yes_diff": max(diffs), "callback_calls_per_pass": capture.asked / (len(items) + 1)}
    del with_cb, plain
    return out


# --- analysis ----------------------------------------------------------------------------------------------
def auroc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def question_folds(y_q: np.ndarray, groups: np.ndarray | None, n_splits: int = FOLDS,
                   seed: int = SEED) -> list[np.ndarray]:
    """Test question indices of each fold, stratified by has_answer (as eval/calibrate.py's folds); with
    ``groups``, no group is split across folds."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is None:
        return [t for _, t in StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(y_q, y_q)]
    kf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [t for _, t in kf.split(y_q, y_q, groups)]


def _logistic(c: float) -> Any:
    """The combiner: standardized columns, L2 logistic (C=1 as eval/calibrate.py's)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))


def _rows_of(qidx: np.ndarray, passage_q: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.isin(passage_q, qidx))


def _question_max(score: np.ndarray, passage_q: np.ndarray, n_q: int) -> np.ndarray:
    out = np.full(n_q, -np.inf)
    np.maximum.at(out, passage_q, score)
    return out


def probe_scores(x: np.ndarray, label: np.ndarray, passage_q: np.ndarray, train_q: np.ndarray,
                 test_q: np.ndarray, grid: Sequence[float]) -> dict[float, np.ndarray]:
    """Log-odds of the passage-level probe, per C, for the passages of ``test_q`` (fitted on ``train_q``'s).

    Standardized on the training passages; the C path is fitted from the smallest C up, each fit started
    from the previous one's coefficients (Newton-Cholesky: ~3 iterations per C, ~1.3 s for a 7-value path
    on 1800 x 896 at one thread, against ~20 s cold with lbfgs).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    tr, te = _rows_of(train_q, passage_q), _rows_of(test_q, passage_q)
    scaler = StandardScaler().fit(x[tr])
    a, b = scaler.transform(x[tr]), scaler.transform(x[te])
    m = LogisticRegression(solver="newton-cholesky", warm_start=True, max_iter=200)
    out = {}
    for c in sorted(grid):
        m.set_params(C=c).fit(a, label[tr])
        out[c] = m.decision_function(b)
    return out


def cross_fit(x: np.ndarray, label: np.ndarray, passage_q: np.ndarray, questions: np.ndarray, y_q: np.ndarray,
              groups: np.ndarray | None, grid: Sequence[float], seed: int) -> dict[float, np.ndarray]:
    """Out-of-fold passage log-odds per C for the passages of ``questions`` (inner folds over those questions)."""
    rows = _rows_of(questions, passage_q)
    out = {c: np.zeros(len(passage_q)) for c in grid}
    inner = question_folds(y_q[questions], None if groups is None else groups[questions], FOLDS - 1, seed)
    for te in inner:
        tr = np.setdiff1d(np.arange(len(questions)), te)
        s = probe_scores(x, label, passage_q, questions[tr], questions[te], grid)
        te_rows = _rows_of(questions[te], passage_q)
        for c in grid:
            out[c][te_rows] = s[c]
    return {c: v[rows] for c, v in out.items()}


def combiner_oof(features: np.ndarray, y_q: np.ndarray, folds: list[np.ndarray],
                 extra_train: list[np.ndarray] | None = None, extra_test: list[np.ndarray] | None = None) -> np.ndarray:
    """Out-of-fold p(answerable) of a logistic over question features (C=1, standardized, as
    eval/calibrate.py); ``extra_*`` add one column per fold: its training questions' and its test questions'."""
    n = len(y_q)
    p = np.zeros(n)
    for k, test in enumerate(folds):
        train = np.setdiff1d(np.arange(n), test)
        a, b = features[train], features[test]
        if extra_train is not None and extra_test is not None:
            a = np.column_stack([a, extra_train[k]])
            b = np.column_stack([b, extra_test[k]])
        p[test] = _logistic(1.0).fit(a, y_q[train]).predict_proba(b)[:, 1]
    return p


def _question_words_model() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                         LogisticRegression(C=1.0, max_iter=2000))


def question_words(questions: Sequence[str], y_q: np.ndarray, folds: list[np.ndarray],
                   groups: np.ndarray | None) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """p(answerable) from the question's words alone (TF-IDF of 1-2 grams, L2 logistic, C=1): how much the folds
    let a model learn from the wording of other questions without reading any passage.

    :returns: the out-of-fold log-odds, and per fold the training questions' (inner out of fold) and the test
        questions' log-odds, for a combiner nested as the probes' are.
    """
    q = np.array(questions, dtype=object)
    oof = np.zeros(len(y_q))
    train_scores, test_scores = [], []
    for k, test in enumerate(folds):
        train = np.setdiff1d(np.arange(len(y_q)), test)
        oof[test] = test_s = _question_words_model().fit(q[train], y_q[train]).decision_function(q[test])
        inner = np.zeros(len(train))
        for te in question_folds(y_q[train], None if groups is None else groups[train], FOLDS - 1, SEED + 1 + k):
            tr = np.setdiff1d(np.arange(len(train)), te)
            inner[te] = _question_words_model().fit(q[train[tr]], y_q[train[tr]]).decision_function(q[train[te]])
        train_scores.append(inner)
        test_scores.append(test_s)
    return oof, train_scores, test_scores


def bootstrap_diff(y: np.ndarray, a: np.ndarray, b: np.ndarray, n: int = BOOTSTRAP, seed: int = 0) -> dict[str, float]:
    """AUROC(a) - AUROC(b) over questions resampled with replacement: point, 95% percentile interval, P(diff <= 0)."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        if y[i].min() == y[i].max():
            continue
        diffs.append(auroc(y[i], a[i]) - auroc(y[i], b[i]))
    d = np.array(diffs)
    return {"diff": auroc(y, a) - auroc(y, b), "lo": float(np.percentile(d, 2.5)), "hi": float(np.percentile(d, 97.5)),
            "p_le_0": float((d <= 0).mean())}


@dataclass
class FoldProbe:
    """One (layer, label) probe in one outer fold, C chosen by inner CV on the fold's training questions."""

    c: float
    inner_auroc: float  # question-level AUROC of the inner out-of-fold scores at that C
    train_q: np.ndarray  # inner out-of-fold question scores of the training questions (fed to the combiner)
    test_q: np.ndarray  # the outer model's question scores of the test questions
    test_passages: np.ndarray  # the outer model's passage log-odds of the test questions' passages


def article(record: dict[str, Any]) -> str:
    """The question's article, as far as the record tells: its gold paragraph's title when retrieved, else the
    top passage's (SQuAD's questions come from one paragraph of one article)."""
    g = record.get("gold_rank")
    return str(record["titles"][g - 1] if g else record["titles"][0])


def analyze(records: list[dict[str, Any]], hidden: Hidden, grid: Sequence[float],
            group_by_article: bool = False) -> dict[str, Any]:
    """Every AUROC of the experiment (see the module docstring).

    :param group_by_article: folds (outer and inner) that never split an article: a check that the probes do
        not lean on what they learn of the articles of the training questions.
    """

    ids = [r["id"] for r in records]
    index = {q: i for i, q in enumerate(ids)}
    passage_q = np.array([index[row["id"]] for row in hidden.rows])
    n_q, n_p = len(records), len(passage_q)
    y_q = np.array([int(r["has_answer"]) for r in records])
    labels = {
        "has_answer": y_q[passage_q],
        "gold_in_passage": np.array([int(r["has_answer"] and passage_has_gold(r["answers"], r["passages"][row["passage"]]))
                                     for row in hidden.rows for r in [records[index[row["id"]]]]]),
    }
    groups = np.array([article(r) for r in records]) if group_by_article else None
    folds = question_folds(y_q, groups)
    sig = [record_edge_signals(r) for r in records]
    names = list(sig[0])
    feats = {"all23": np.array([[s[k] for k in names] for s in sig]),
             # pipelines/calibration/default.json's edge.answerable model (forward selection by eval/calibrate.py)
             "sel2": np.array([[s["edge.p_yes_chosen"], s["edge.dense_chosen"]] for s in sig])}
    combined = {k: combiner_oof(f, y_q, folds) for k, f in feats.items()}
    p_yes_max = feats["all23"][:, names.index("edge.p_yes_max")]
    words = question_words([r["question"] for r in records], y_q, folds, groups)
    p_rec = np.array([row["recorded_p_yes"] for row in hidden.rows])
    p_new = np.array([row["p_yes"] for row in hidden.rows])
    result: dict[str, Any] = {
        "folds": "by article" if group_by_article else "by question", "questions": n_q, "passages": n_p,
        "answerable_share": float(y_q.mean()),
        "gold_in_passage_share": float(labels["gold_in_passage"].mean()),
        "p_yes_check": {"max_abs_diff": float(np.abs(p_new - p_rec).max()),
                        "median_abs_diff": float(np.median(np.abs(p_new - p_rec))),
                        "share_within_1e-3": float((np.abs(p_new - p_rec) <= 1e-3).mean()),
                        "corr": float(np.corrcoef(p_new, p_rec)[0, 1])},
        "baselines": {
            "p_yes_max (recorded)": auroc(y_q, p_yes_max),
            "p_yes_max (these passes)": auroc(y_q, _question_max(p_new, passage_q, n_q)),
            "edge combined, all 23 signals": auroc(y_q, combined["all23"]),
            "edge combined, 2 calibrated signals": auroc(y_q, combined["sel2"]),
            "question words only (no model, no passage)": auroc(y_q, words[0]),
            "edge combined, 2 calibrated signals + question words": auroc(
                y_q, combiner_oof(feats["sel2"], y_q, folds, words[1], words[2])),
        },
        "grid": list(grid), "layers": {},
    }
    fold_probes: dict[tuple[int, str], list[FoldProbe]] = {}
    for li, layer in enumerate(hidden.layers):
        x = hidden.x[:, li].astype(np.float64)
        for lname, lab in labels.items():
            oof = {c: np.zeros(n_p) for c in grid}  # the fixed grid: outer out-of-fold passage log-odds per C
            per_fold = []
            for k, test in enumerate(folds):
                train = np.setdiff1d(np.arange(n_q), test)
                outer = probe_scores(x, lab, passage_q, train, test, grid)
                te_rows, tr_rows = _rows_of(test, passage_q), _rows_of(train, passage_q)
                for c in grid:
                    oof[c][te_rows] = outer[c]
                inner = cross_fit(x, lab, passage_q, train, y_q, groups, grid, seed=SEED + 1 + k)
                inner_q = {c: _question_max(_scatter(v, tr_rows, n_p), passage_q, n_q)[train] for c, v in inner.items()}
                inner_auc = {c: auroc(y_q[train], inner_q[c]) for c in grid}
                c_best = max(grid, key=lambda c: inner_auc[c])
                per_fold.append(FoldProbe(c_best, inner_auc[c_best], inner_q[c_best],
                                          _question_max(_scatter(outer[c_best], te_rows, n_p), passage_q, n_q)[test],
                                          outer[c_best]))
            fold_probes[(layer, lname)] = per_fold
            entry = _nested_entry(per_fold, folds, y_q, feats, passage_q, lab)
            entry["auroc_by_C"] = {str(c): auroc(y_q, _question_max(oof[c], passage_q, n_q)) for c in grid}
            result["layers"][f"{layer}/{lname}"] = entry
            print(f"layer {layer:2d} {lname:16s} probe {entry['probe']:.4f}  +all23 {entry['all23_plus_probe']:.4f}"
                  f"  +sel2 {entry['sel2_plus_probe']:.4f}  C {entry['C']}", flush=True)
    # Fully nested: in each outer fold, the (layer, label, C) with the best inner AUROC on its training questions.
    auto = []
    for k in range(len(folds)):
        key = max(fold_probes, key=lambda kk: fold_probes[kk][k].inner_auroc)
        auto.append((key, fold_probes[key][k]))
    auto_entry = _nested_entry([fp for _, fp in auto], folds, y_q, feats, passage_q, None)
    auto_entry["chosen"] = [f"{layer}/{lname}" for (layer, lname), _ in auto]
    result["auto"] = auto_entry
    best = max(result["layers"], key=lambda k: result["layers"][k]["all23_plus_probe"])
    layer, lname = best.split("/")
    scores = _nested_scores(fold_probes[(int(layer), lname)], folds, y_q, feats)
    auto_scores = _nested_scores([fp for _, fp in auto], folds, y_q, feats)
    result["bootstrap"] = {
        "best": best,
        f"{best}: all23+probe - all23": bootstrap_diff(y_q, scores["all23"], combined["all23"]),
        f"{best}: sel2+probe - sel2": bootstrap_diff(y_q, scores["sel2"], combined["sel2"]),
        f"{best}: probe - p_yes_max": bootstrap_diff(y_q, scores["probe"], p_yes_max),
        "auto: all23+probe - all23": bootstrap_diff(y_q, auto_scores["all23"], combined["all23"]),
        "auto: sel2+probe - sel2": bootstrap_diff(y_q, auto_scores["sel2"], combined["sel2"]),
        "auto: probe - p_yes_max": bootstrap_diff(y_q, auto_scores["probe"], p_yes_max),
    }
    return result


def _nested_scores(per_fold: Sequence[FoldProbe], folds: list[np.ndarray], y_q: np.ndarray,
                   feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Question-level out-of-fold scores: the probe alone, and each edge feature set with the probe's score."""
    probe = np.zeros(len(y_q))
    for fp, test in zip(per_fold, folds, strict=True):
        probe[test] = fp.test_q
    out = {"probe": probe}
    for k, f in feats.items():
        out[k] = combiner_oof(f, y_q, folds, [fp.train_q for fp in per_fold], [fp.test_q for fp in per_fold])
    return out


def _nested_entry(per_fold: Sequence[FoldProbe], folds: list[np.ndarray], y_q: np.ndarray,
                  feats: dict[str, np.ndarray], passage_q: np.ndarray, lab: np.ndarray | None) -> dict[str, Any]:
    s = _nested_scores(per_fold, folds, y_q, feats)
    entry: dict[str, Any] = {"C": [fp.c for fp in per_fold], "probe": auroc(y_q, s["probe"]),
                             "all23_plus_probe": auroc(y_q, s["all23"]), "sel2_plus_probe": auroc(y_q, s["sel2"])}
    if lab is not None:  # passage-level AUROC of the probe against its own label
        passage = np.zeros(len(passage_q))
        for fp, test in zip(per_fold, folds, strict=True):
            passage[_rows_of(test, passage_q)] = fp.test_passages
        entry["passage_auroc"] = auroc(lab, passage)
    return entry


def _scatter(values: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, -np.inf)
    out[rows] = values
    return out


def print_report(result: dict[str, Any], timing_result: dict[str, Any] | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    t = Table(title=f"Question-level OOF AUROC, {result['questions']} calibration questions, "
                    f"{result['passages']} passages ({FOLDS} folds {result['folds']})")
    t.add_column("signal")
    t.add_column("AUROC", justify="right")
    for k, v in result["baselines"].items():
        t.add_row(k, f"{v:.4f}")
    console.print(t)
    t = Table(title="Layer probes: question score = max over passages; C by inner CV (nested)")
    for col in ("layer/label", "probe", "all 23 + probe", "2 calibrated + probe", "passage AUROC", "C per fold"):
        t.add_column(col, justify="right")
    for k, e in result["layers"].items():
        t.add_row(k, f"{e['probe']:.4f}", f"{e['all23_plus_probe']:.4f}", f"{e['sel2_plus_probe']:.4f}",
                  f"{e['passage_auroc']:.4f}", ",".join(f"{c:g}" for c in e["C"]))
    a = result["auto"]
    t.add_row("auto (layer, label, C by inner CV)", f"{a['probe']:.4f}", f"{a['all23_plus_probe']:.4f}",
              f"{a['sel2_plus_probe']:.4f}", "", " ".join(a["chosen"]))
    console.print(t)
    t = Table(title="Probe alone at each fixed C (question-level OOF AUROC)")
    t.add_column("layer/label")
    for c in result["grid"]:
        t.add_column(f"C={c:g}", justify="right")
    for k, e in result["layers"].items():
        t.add_row(k, *(f"{v:.4f}" for v in e["auroc_by_C"].values()))
    console.print(t)
    t = Table(title="Bootstrap over questions (2000 resamples): AUROC difference")
    for col in ("comparison", "diff", "95% interval", "P(diff <= 0)"):
        t.add_column(col, justify="right")
    for k, d in result["bootstrap"].items():
        if isinstance(d, dict):
            t.add_row(k, f"{d['diff']:+.4f}", f"[{d['lo']:+.4f}, {d['hi']:+.4f}]", f"{d['p_le_0']:.3f}")
    console.print(t)
    console.print(f"p(yes) of these passes against the recorded edge reading: {result['p_yes_check']}")
    if timing_result:
        w, wo = timing_result["with_callback_s"], timing_result["without_callback_s"]
        console.print(f"timing ({timing_result['passages']} passages, {timing_result['threads']} thread(s), "
                      f"{timing_result['mean_tokens']:.0f} tokens on average): with callback {w['mean']:.3f} s mean / "
                      f"{w['median']:.3f} s median, without {wo['mean']:.3f} / {wo['median']:.3f}; overhead "
                      f"{timing_result['overhead_pct_of_means']:+.1f}% of means, "
                      f"{timing_result['median_paired_overhead_pct']:+.1f}% median paired")


START, END = "<!-- bench-layer-probe:start -->", "<!-- bench-layer-probe:end -->"
HEADING = "## Intermediate layers of the edge model — `make bench-layer-probe`"


def markdown(results: dict[str, Any], command: str) -> str:
    """The BENCHMARKS.md block: per fold scheme, the baselines, the best fixed layer, the nested choice."""
    lines = [START, "", f"Reproduce: `{command}` (calibration split only; nothing here is fitted or reported on "
             "held-out questions). Question-level out-of-fold AUROC of answerable vs unanswerable, 5 folds.", ""]
    for scheme, label in (("by_article", "folds by article (no article in two folds)"),
                          ("by_question", "folds by question (held-out dev-a shares these articles)")):
        r = results.get(scheme)
        if not r:
            continue
        b = r["baselines"]
        best = r["bootstrap"]["best"]
        e = r["layers"][best]
        d = r["bootstrap"][f"{best}: sel2+probe - sel2"]
        a = r["auto"]
        da = r["bootstrap"]["auto: sel2+probe - sel2"]
        lines += [f"**{label}**, {r['questions']} questions, {r['passages']} passages:", "",
                  "| signal | AUROC | vs 2 calibrated signals (95% bootstrap) |", "|---|---:|---:|",
                  f"| p(yes) max (recorded edge reading) | {b['p_yes_max (recorded)']:.3f} | |",
                  f"| edge, 2 calibrated signals (today's router) | {b['edge combined, 2 calibrated signals']:.3f} | |",
                  f"| question words only (no model) | {b['question words only (no model, no passage)']:.3f} | |",
                  f"| probe alone, layer {best} (best fixed) | {e['probe']:.3f} | |",
                  f"| 2 signals + probe, layer {best} (best fixed, chosen after the fact) | {e['sel2_plus_probe']:.3f} | "
                  f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] |",
                  f"| 2 signals + probe, layer/label/C chosen by inner CV | {a['sel2_plus_probe']:.3f} | "
                  f"{da['diff']:+.3f} [{da['lo']:+.3f}, {da['hi']:+.3f}] |", ""]
    t = results.get("timing")
    if t:
        lines += [f"Capturing the layers costs {t['overhead_pct_of_means']:+.1f}% of the prefill time "
                  f"({t['passages']} passages, {t['threads']} thread, with/without the callback interleaved).", ""]
    lines += ["Verdict: with folds that keep an article's questions together, a probe chosen honestly (inner CV) "
              "adds nothing measurable to the router's two signals; the larger gain of question folds is the "
              "probe learning the articles' topics. Not adopted.", "", END]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description="Linear probes on the edge model's layers against its p(yes) "
                                             "(calibration split only).")
    ap.add_argument("--records", type=Path, default=Path("bench/models/records-calibration.jsonl"))
    ap.add_argument("--out", type=Path, default=Path("bench/layer-probe"))
    ap.add_argument("--layers", default=",".join(map(str, DEFAULT_LAYERS)), help="comma-separated layer indices")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads (prefill and batch)")
    ap.add_argument("--passage-chars", type=int, default=None, help="default: the settings' passage_chars (as the edge)")
    ap.add_argument("--timing", type=int, default=0, help="first time N passages with and without the callback")
    ap.add_argument("--extract-only", action="store_true")
    ap.add_argument("--analyze-only", action="store_true")
    ap.add_argument("--folds", default="question,article",
                    help="fold schemes to report: 'question' (as eval/calibrate.py) and/or 'article' (no article split)")
    ap.add_argument("--benchmarks-md", type=Path, default=Path("BENCHMARKS.md"))
    ap.add_argument("--from-json", action="store_true", help="only re-render BENCHMARKS.md from <out>/results.json")
    args = ap.parse_args()
    command = "make bench-layer-probe"
    if args.from_json:
        replace_block(args.benchmarks_md, START, END, markdown(json.loads((args.out / "results.json").read_text()), command),
                      HEADING)
        return
    layers = tuple(int(x) for x in args.layers.split(","))
    if args.passage_chars is None:
        args.passage_chars = load_settings().passage_chars
    records = load_records(args.records)
    args.out.mkdir(parents=True, exist_ok=True)
    timing_path = args.out / "timing.json"
    if args.timing and not args.analyze_only:
        timing_path.write_text(json.dumps(timing(records, args.timing, layers, args.threads, args.passage_chars), indent=1))
    if not args.analyze_only:
        extract(records, args.out, layers, args.threads, args.passage_chars)
    if args.extract_only:
        return
    hidden = load_hidden(records, args.out, layers)
    timing_result = json.loads(timing_path.read_text()) if timing_path.exists() else None
    results_path = args.out / "results.json"
    # A scheme run alone keeps the other's earlier results.
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["timing"] = timing_result
    from threadpoolctl import threadpool_limits

    with threadpool_limits(args.threads):  # BLAS on as many cores as llama.cpp was given
        for scheme in args.folds.split(","):
            if scheme not in ("question", "article"):
                raise SystemExit(f"unknown fold scheme {scheme!r} — use question and/or article")
            key = f"by_{scheme}"
            results[key] = analyze(records, hidden, C_GRID, group_by_article=scheme == "article")
            results_path.write_text(json.dumps(results, indent=1))
            print_report(results[key], timing_result)
    replace_block(args.benchmarks_md, START, END, markdown(results, command), HEADING)


if __name__ == "__main__":
    main()
