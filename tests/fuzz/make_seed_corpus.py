#!/usr/bin/env python3
"""Writes the seed corpora of the fuzzers into tests/fuzz/corpus/<input>/
(docs/fuzzing.md), each file a few hundred bytes to a few KB:
  safetensors     the golden files of tests/golden/safetensors/ and the
                  malformed cases of tests/test_roberta_safetensors.cpp;
  tokenizer       `vocab.json \0 merges.txt \0 text`: a small byte-level BPE
                  vocabulary (the 256 byte tokens, the specials, the first
                  merges of assets/demo-bpe) with texts, and malformed files;
  tokenizer_text  texts for the demo-bpe tokenizer;
  wordpiece       `options byte, vocab.txt \\0 text`: a small BERT vocabulary
                  from assets/bert-wordpiece with texts, and malformed ones;
  csv             CommonLit-shaped CSV files, well and badly formed;
  roberta_config  config.json files, well and badly formed;
  evaluator_state   PeriodicEvaluator states in fuzz_evaluator_state.cpp's
                  encoding (key mask, per key dtype/count byte and 8-byte
                  words, history flag and contents), well and badly formed;
  evaluator_history a byte (steps - 1 in bits 0-2, jsonl in bit 3) and the
                  history file a resumed run finds;
  training_state  TrainingState files: raw (mode byte 0, then a state file:
                  the valid one fuzz_training_state.cpp's fixed run writes,
                  cut and corrupted) and structured (mode byte 1, then edits
                  of that valid archive in fuzz_training_state.cpp's encoding).
Crashers found by a fuzzer are added next to them by hand (named crash-*) and
never rewritten here. Run: .venv/bin/python tests/fuzz/make_seed_corpus.py
(the raw training-state seeds start from the committed
corpus/training_state/seed_raw_valid; to renew it, run the replay with
FINETUNE_FUZZ_TRAINING_STATE_DUMP=DIR and set FINETUNE_TRAINING_STATE=DIR/state.pt).
"""
import csv
import gzip
import io
import json
import os
import shutil
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
OUT = CORPUS / "safetensors"
EXAMPLE = ROOT / "examples" / "roberta_regression"
A = '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'
BUF8 = b"\0" * 8


def file(header, buf=b""):
    h = header.encode("utf-8") if isinstance(header, str) else header
    return struct.pack("<Q", len(h)) + h + buf


def entry(dtype="F32", shape="[2]", offsets="[0,8]", extra=""):
    return '{"a":{"dtype":"%s","shape":%s,"data_offsets":%s%s}}' % (dtype, shape, offsets, extra)


CASES = {
    "valid_two": file('{"b":{"dtype":"U8","shape":[2],"data_offsets":[8,10]},' + A + "}", BUF8 + b"\5\6"),
    "valid_meta": file('{"__metadata__":{"format":"pt"},' + A + "}", BUF8),
    "valid_empty": file("{}"),
    "short": b"\1\0\0",
    "len_huge": struct.pack("<Q", 2**64 - 1) + b"{}",
    "len_past_end": struct.pack("<Q", 3) + b"{}",
    "bad_json": file('{"a":', BUF8),
    "not_object": file("[1,2]"),
    "nul_padding": file(b"{}\0\0\0\0\0\0"),
    "invalid_utf8": file(b'{"a\xff":{}}'),
    "deep": file("[" * 64 + "]" * 64),
    "dup_key": file("{" + A + "," + A + "}", BUF8),
    "entry_not_object": file('{"a":[1]}'),
    "missing_field": file('{"a":{"dtype":"F32","shape":[2]}}', BUF8),
    "extra_field": file(entry(extra=',"x":1'), BUF8),
    "dtype_f8": file(entry(dtype="F8_E4M3", shape="[8]"), BUF8),
    "dtype_number": file('{"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}}', BUF8),
    "shape_negative": file(entry(shape="[-2]"), BUF8),
    "shape_float": file(entry(shape="[2.0]"), BUF8),
    "shape_overflow": file(entry(shape="[4294967296,4294967296,0]"), BUF8),
    "nbytes_overflow": file(entry(shape="[4611686018427387904]"), BUF8),
    "shape_mismatch": file(entry(shape="[3]"), BUF8),
    "offsets_reversed": file(entry(offsets="[8,0]"), BUF8),
    "offsets_past_end": file(entry(offsets="[8,16]"), BUF8),
    "offsets_huge": file(entry(dtype="U8", shape="[1]",
                               offsets="[18446744073709551614,18446744073709551615]"), BUF8),
    "overlap": file("{" + A + ',"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', BUF8),
    "hole": file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                 '"b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}}', BUF8),
    "uncovered_tail": file(entry(shape="[1]", offsets="[0,4]"), BUF8),
    "metadata_number": file('{"__metadata__":{"k":1}}'),
    "bool_byte": file('{"a":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}', b"\1\2"),
}


def bytes_to_unicode():
    """GPT-2's byte -> character table (as tokenizer.hpp's)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 256
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(extra)
            extra += 1
    return table


def small_bpe(n_merges=24):
    """A small valid vocabulary: specials, the 256 byte tokens, the first
    n_merges merges of assets/demo-bpe and their results (ids without gaps)."""
    tokens = ["<s>", "<pad>", "</s>", "<unk>"] + list(bytes_to_unicode().values())
    merges = []
    for line in (EXAMPLE / "assets" / "demo-bpe" / "merges.txt").read_text("utf-8").splitlines():
        if line.startswith("#version") or len(merges) == n_merges:
            continue
        a, b = line.split(" ")
        if a in tokens and b in tokens:
            merges.append(line)
            if a + b not in tokens:
                tokens.append(a + b)
    tokens.append("<mask>")
    vocab = {t: i for i, t in enumerate(tokens)}
    return vocab, merges


def tokenizer_cases():
    vocab, merges = small_bpe()
    v = json.dumps(vocab, ensure_ascii=False).encode("utf-8")
    m = ("#version: 0.2\n" + "\n".join(merges) + "\n").encode("utf-8")

    def one(vocab_bytes, merges_bytes, text):
        return vocab_bytes + b"\0" + merges_bytes + b"\0" + text

    gap = dict(vocab)
    gap["<mask>"] = len(vocab) + 5
    dup = dict(vocab)
    dup["<mask>"] = 0
    no_byte = {t: i for t, i in vocab.items() if t != "A"}
    no_byte = {t: i for i, t in enumerate(no_byte)}
    no_special = {t: i for i, t in enumerate(t for t in vocab if t != "<unk>")}
    dump = lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8")
    return {
        "valid_text": one(v, m, b"Hello world, it's the 3rd <mask> of  tests.\n"),
        "valid_specials": one(v, m, b"<s>a<pad></s><unk><mask><<s>>"),
        "valid_invalid_utf8": one(v, m, b"caf\xc3\xa9 \xff\xfe \xe2\x82 the\xf0\x9f\x98\x80"),
        "valid_crlf_merges": one(v, m.replace(b"\n", b"\r\n"), b"  the\tthat \r\n"),
        "valid_no_merges": one(v, b"", b"the the"),
        "valid_repeated_merge": one(v, m + m.split(b"\n")[1] + b"\n", b"the"),
        "vocab_not_json": one(b'{"a":', m, b"x"),
        "vocab_not_object": one(b"[1,2]", m, b"x"),
        "vocab_id_gap": one(dump(gap), m, b"x"),
        "vocab_id_twice": one(dump(dup), m, b"x"),
        "vocab_id_string": one(v.replace(b'"<mask>": ', b'"<mask>": "x", "y": '), m, b"x"),
        "vocab_no_byte": one(dump(no_byte), b"", b"x"),
        "vocab_no_special": one(dump(no_special), b"", b"x"),
        "merges_three_tokens": one(v, b"a b c\n", b"x"),
        "merges_one_token": one(v, b"ab\n", b"x"),
        "merges_unknown": one(v, b"\xc4\xa0 zz\n", b"x"),
        "merges_no_result": one(v, b"q z\n", b"x"),
        "empty": b"",
    }


TEXTS = {
    "english": b"It was the best of times, it was the worst of times; it's 1859.\n",
    "unicode": "Caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \u0645\u0631\u062d\u0628\u0627 \U0001F600 \u00a0\u2003x\u3000y".encode("utf-8"),
    "specials": b"<s>Hi</s><pad><pad> <mask>. <unk><s",
    "invalid_utf8": b"\xff\xfeab\xc3(\xe2\x82\xa1\xed\xa0\x80\xf4\x90\x80\x80",
    "whitespace": b"a  \t\n\n  b   \r\n   ",
    "contractions": b"I'm you're we've they'll he'd she's don't 'S 'LL",
    "numbers_punct": b"3.14159 -- 1,000,000!!! ?? $$$ 42nd",
    "prefix_space": b" leading space and <s>",
    "empty": b"",
}


def real_rows(n):
    """The header and the first n rows of the embedded data (with `address`)."""
    text = gzip.decompress((EXAMPLE / "data" / "sotu_passages.csv.gz").read_bytes()).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))[: n + 1]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode("utf-8")


def csv_cases():
    header = b"id,url_legal,license,excerpt,target,standard_error\n"
    return {
        "valid": header + b'a1,,,"An excerpt, with ""quotes""",-0.5,0.48\nb2,,,Plain text,1.25,0.5\n',
        "valid_crlf_bom": b"\xef\xbb\xbf" + header.replace(b"\n", b"\r\n") + b"a,,,text,1,0.5\r\n",
        "valid_multiline": header + b'a,,,"line one\nline two\r\nthree",0.1,0.2\n\n',
        "valid_reference_row": header + b"r,,,ref,0,0\nb,,,kept,1e-3,2E1\n",
        "valid_address": real_rows(2),
        "missing_column": b"id,excerpt,target\na,text,1\n",
        "field_count": header + b"a,,,text,1\n",
        "target_nan": header + b"a,,,text,nan,0.5\n",
        "target_inf": header + b"a,,,text,1e999,0.5\n",
        "target_text": header + b"a,,,text,one,0.5\n",
        "empty_excerpt": header + b'a,,," \t ",1,0.5\n',
        "unterminated": header + b'a,,,"open,1,0.5\n',
        "after_quote": header + b'a,,,"x"y,1,0.5\n',
        "only_reference": header + b"r,,,ref,0,0\n",
        "header_only": header,
        "empty": b"",
    }


def config_cases():
    base = json.loads((EXAMPLE / "assets" / "demo-model" / "config.json").read_text())
    dump = lambda d: json.dumps(d, indent=2).encode("utf-8")
    return {
        "demo_model": dump(base),
        "empty_object": b"{}",
        "roberta_base": dump({"vocab_size": 50265, "hidden_size": 768, "num_hidden_layers": 12,
                              "num_attention_heads": 12, "intermediate_size": 3072,
                              "max_position_embeddings": 514, "layer_norm_eps": 1e-05}),
        "not_json": b'{"hidden_size": 12',
        "not_object": b"[1]",
        "string_size": b'{"hidden_size": "big"}',
        "float_size": b'{"hidden_size": 128.0}',
        "negative_layers": b'{"num_hidden_layers": -1}',
        "huge_unsigned": b'{"vocab_size": 18446744073709551615}',
        "heads_not_divisor": b'{"hidden_size": 130, "num_attention_heads": 4}',
        "dropout_range": b'{"hidden_dropout_prob": 1.5}',
        "eps_nan_like": b'{"layer_norm_eps": -0.0}',
        "act_relu": b'{"hidden_act": "relu"}',
        "position_relative": b'{"position_embedding_type": "relative_key"}',
        "pad_past_vocab": b'{"vocab_size": 2, "pad_token_id": 2}',
        "deep": b'{"x":' + b"[" * 200 + b"]" * 200 + b"}",
    }


STATE_KEYS = ["mode", "best", "best_averaged", "bad_evaluations", "global_step", "num_evaluations",
              "history_rows", "history_bytes", "last_epoch", "last_batch", "stopped",
              "epoch", "steps_in_epoch", "step_evaluated"]
LONG, DOUBLE, FLOAT, INT, BOOL, HALF, LONG_2D = range(7)


def state(values, kinds=None, drop=(), history=None):
    """fuzz_evaluator_state.cpp's encoding of a state; values per key (a list
    for more than one element), kinds per key (default: double for the best
    values, long otherwise), keys in `drop` absent, history None: no file."""
    kinds = kinds or {}
    mask = sum(1 << i for i, k in enumerate(STATE_KEYS) if k not in drop)
    out = struct.pack("<H", mask)
    for key in STATE_KEYS:
        if key in drop:
            continue
        v = values[key]
        v = v if isinstance(v, list) else [v]
        kind = kinds.get(key, DOUBLE if key.startswith("best") else LONG)
        out += bytes([kind | (len(v) << 3)])
        for x in v:
            out += struct.pack("<d", x) if kind in (DOUBLE, HALF) else struct.pack("<q", int(x))
    return out + (b"\0" if history is None else b"\1" + history)


def evaluator_state_cases():
    inf = float("inf")
    fresh = dict(mode=0, best=inf, best_averaged=inf, bad_evaluations=0, global_step=0,
                 num_evaluations=0, history_rows=0, history_bytes=0, last_epoch=-1, last_batch=-1,
                 stopped=0, epoch=0, steps_in_epoch=0, step_evaluated=0)
    rows = b"epoch,batch,step,weights,metric,best,improved\n0,0,1,raw,0.5,0.5,1\n"
    ran = dict(fresh, best=0.5, global_step=1, num_evaluations=1, history_rows=1,
               history_bytes=len(rows), last_epoch=0, last_batch=0, steps_in_epoch=1,
               step_evaluated=1)
    return {
        "fresh": state(fresh),
        "fresh_empty_history": state(fresh, history=b""),
        "resumed": state(ran, history=rows),
        "resumed_longer_history": state(ran, history=rows + b"0,1,2,raw,0.4,0.4,1\n0,2,3,ra"),
        "short_history": state(ran, history=rows[:-5]),
        "no_history_file": state(ran),
        "mode_max": state(dict(ran, mode=1), history=rows),
        "mode_two": state(dict(fresh, mode=2)),
        "missing_key": state(fresh, drop=("history_bytes",)),
        "best_nan": state(dict(ran, best=float("nan")), history=rows),
        "float_step": state(dict(ran, global_step=1), kinds={"global_step": FLOAT}, history=rows),
        "stopped": state(dict(ran, stopped=1, bad_evaluations=51), history=rows),
        "before_counting_keys": state(ran, drop=("epoch", "steps_in_epoch", "step_evaluated"),
                                      history=rows),
        "epoch_end_pending": state(dict(ran, epoch=3, steps_in_epoch=7), history=rows),
        "evaluated_at_epoch_start": state(dict(ran, steps_in_epoch=0), history=rows),
    }


def evaluator_history_cases():
    header = b"epoch,batch,step,weights,metric,best,improved\n"
    row = b"0,%d,%d,raw,0.5,0.5,1\n"
    csv3 = header + b"".join(row % (i, i + 1) for i in range(3))
    jsonl = b'{"epoch":0,"batch":0,"step":1,"weights":"raw","metric":1,"best":1,"improved":true}\n'
    return {
        "csv_3_steps": b"\x02" + csv3,
        "csv_3_steps_torn_tail": b"\x02" + csv3 + b"0,3,4,ra",
        "csv_8_steps_short": b"\x07" + csv3,
        "csv_empty": b"\x00",
        "jsonl_1_step": b"\x08" + jsonl,
        "jsonl_2_steps_longer": b"\x09" + jsonl * 3,
    }


# fuzz_training_state.cpp's node order (its FINETUNE_FUZZ_TRAINING_STATE_DUMP
# writes it): the valid state's keys sorted by path, sub-archives with a
# trailing '/'; LibTorch's own optimizer state (part_optimizer/state/...)
# follows these and is addressed by index only.
TRAINING_STATE_NODES = """format generator_0 generators part_evaluator/
part_evaluator/periodic_evaluator_bad_evaluations part_evaluator/periodic_evaluator_best
part_evaluator/periodic_evaluator_best_averaged part_evaluator/periodic_evaluator_epoch
part_evaluator/periodic_evaluator_global_step part_evaluator/periodic_evaluator_history_bytes
part_evaluator/periodic_evaluator_history_rows part_evaluator/periodic_evaluator_last_batch
part_evaluator/periodic_evaluator_last_epoch part_evaluator/periodic_evaluator_mode
part_evaluator/periodic_evaluator_num_evaluations part_evaluator/periodic_evaluator_step_evaluated
part_evaluator/periodic_evaluator_steps_in_epoch part_evaluator/periodic_evaluator_stopped
part_loop/ part_loop/order part_loop/seen part_model/ part_model/names part_model/t0
part_model/t1 part_model/t2 part_model/t3 part_optimizer/ part_optimizer/layout
part_optimizer/options_0/ part_optimizer/options_0/amsgrad part_optimizer/options_0/betas
part_optimizer/options_0/eps part_optimizer/options_0/lr part_optimizer/options_0/weight_decay
part_optimizer/options_1/ part_optimizer/options_1/amsgrad part_optimizer/options_1/betas
part_optimizer/options_1/eps part_optimizer/options_1/lr part_optimizer/options_1/weight_decay
part_optimizer/state/ part_scheduler/ part_scheduler/lr_schedule/initial_lrs
part_scheduler/lr_schedule/step part_scheduler/swa_scheduler_has_swalr
part_scheduler/swa_scheduler_step_count part_scheduler/swa_scheduler_swa_start
part_scheduler/swalr_anneal_epochs part_scheduler/swalr_anneal_strategy
part_scheduler/swalr_last_lr part_scheduler/swalr_step_count part_scheduler/swalr_swa_lr
part_shuffle/ part_shuffle/state part_swa/ part_swa/swa_average_0 part_swa/swa_average_1
part_swa/swa_average_2 part_swa/swa_average_3 part_swa/swa_ema_decay part_swa/swa_n_averaged
part_swa/swa_names part_swa/swa_use_buffers parts position_batch position_epoch
position_optimizer_step position_skipped_steps version""".split()
(DROP, INT, REAL, BOOL_, STRING, CUT_STRING, TENSOR, AS_DTYPE, RESHAPE, SET_ELEMENT, EMPTY_ARCHIVE,
 REAL_LIST, INT_LIST, VIEW) = range(14)
DTYPES = ["long", "double", "float", "int", "bool", "half", "byte", "bfloat16"]


def ts_edit(node, op, payload=b""):
    """One edit: the node (a path above, or an index), the op, its bytes."""
    index = TRAINING_STATE_NODES.index(node) if isinstance(node, str) else node
    return struct.pack("<HB", index, op) + payload


def ts_structured(*edits):
    return b"\1" + b"".join(edits)


def ts_int(v):
    return struct.pack("<q", v)


def ts_real(v):
    return struct.pack("<d", v)


def training_state_cases():
    s, e, i, r = ts_structured, ts_edit, ts_int, ts_real
    dtype = lambda name: bytes([DTYPES.index(name)])
    cases = {
        "structured_valid": s(),
        "structured_format": s(e("format", CUT_STRING, b"\3\0")),
        "structured_version_2": s(e("version", INT, i(2))),
        "structured_version_string": s(e("version", STRING, b"\1" + b"1")),
        "structured_parts_cut": s(e("parts", CUT_STRING, b"\x20\0")),
        "structured_parts_other": s(e("parts", CUT_STRING, b"\0x")),
        "structured_no_model": s(e("part_model/", DROP)),
        "structured_no_loop": s(e("part_loop/", DROP)),
        "structured_scheduler_empty": s(e("part_scheduler/", EMPTY_ARCHIVE)),
        "structured_position_negative": s(e("position_batch", INT, i(-1))),
        "structured_position_double": s(e("position_epoch", REAL, r(1.0))),
        "structured_generators_2": s(e("generators", INT, i(2))),
        "structured_generator_float": s(e("generator_0", AS_DTYPE, dtype("float"))),
        "structured_generator_short": s(e("generator_0", RESHAPE, b"\0")),
        "structured_model_names": s(e("part_model/names", CUT_STRING, b"\1z")),
        "structured_model_shape": s(e("part_model/t0", RESHAPE, b"\2")),
        "structured_model_dtype": s(e("part_model/t2", AS_DTYPE, dtype("double"))),
        "structured_model_nan": s(e("part_model/t1", SET_ELEMENT, b"\1" + r(float("nan")))),
        "structured_model_view": s(e("part_model/t0", VIEW)),
        "structured_layout": s(e("part_optimizer/layout", CUT_STRING, b"\x08z")),
        "structured_no_optimizer_state": s(e("part_optimizer/state/", DROP)),
        "structured_optimizer_state_empty": s(e("part_optimizer/state/", EMPTY_ARCHIVE)),
        "structured_options_lr_string": s(e("part_optimizer/options_1/lr", STRING, b"\2lr")),
        "structured_options_no_eps": s(e("part_optimizer/options_0/eps", DROP)),
        "structured_options_betas": s(e("part_optimizer/options_0/betas", REAL_LIST, b"\3" + r(0.9) * 3)),
        "structured_lr_nan": s(e("part_optimizer/options_0/lr", REAL, r(float("nan")))),
        "structured_scheduler_count": s(e("part_scheduler/swa_scheduler_step_count", INT, i(-3))),
        "structured_scheduler_start": s(e("part_scheduler/swa_scheduler_swa_start", INT, i(4))),
        "structured_scheduler_no_swalr": s(e("part_scheduler/swa_scheduler_has_swalr", BOOL_, b"\0")),
        "structured_swalr_lrs": s(e("part_scheduler/swalr_last_lr", REAL_LIST, b"\1" + r(1e-3))),
        "structured_schedule_lrs_int": s(e("part_scheduler/lr_schedule/initial_lrs", INT_LIST, b"\2" + i(1) * 2)),
        "structured_swa_average_shape": s(e("part_swa/swa_average_3", RESHAPE, b"\1")),
        "structured_swa_average_dtype": s(e("part_swa/swa_average_0", AS_DTYPE, dtype("half"))),
        "structured_swa_n_negative": s(e("part_swa/swa_n_averaged", INT, i(-1))),
        "structured_swa_ema": s(e("part_swa/swa_ema_decay", REAL, r(0.5))),
        "structured_swa_no_names": s(e("part_swa/swa_names", DROP)),
        "structured_evaluator_step": s(e("part_evaluator/periodic_evaluator_global_step", TENSOR,
                                         bytes([DTYPES.index("double") | 1 << 3]) + r(6.0))),
        "structured_evaluator_bytes": s(e("part_evaluator/periodic_evaluator_history_bytes", TENSOR,
                                          bytes([1 << 3]) + i(1 << 40))),
        "structured_shuffle_state": s(e("part_shuffle/state", AS_DTYPE, dtype("long"))),
        "structured_loop_order": s(e("part_loop/order", SET_ELEMENT, b"\0" + r(9.0))),
        "structured_loop_seen": s(e("part_loop/seen", STRING, b"\0")),
        # Two edits: a late failure (the generator) after an early one passes.
        "structured_two_edits": s(e("part_swa/swa_n_averaged", INT, i(7)),
                                  e("generator_0", RESHAPE, b"\4")),
        # LibTorch's own optimizer state: the first nodes after the list above.
        "structured_optimizer_internal_0": s(e(len(TRAINING_STATE_NODES), DROP)),
        "structured_optimizer_internal_5": s(e(len(TRAINING_STATE_NODES) + 5, STRING, b"\1x")),
        "structured_optimizer_internal_30": s(e(len(TRAINING_STATE_NODES) + 30, RESHAPE, b"\2")),
    }
    seed = CORPUS / "training_state" / "seed_raw_valid"
    path = os.environ.get("FINETUNE_TRAINING_STATE")
    state = Path(path).read_bytes() if path else (seed.read_bytes()[1:] if seed.exists() else None)
    if state is None:
        print("training_state: no valid state file: raw seeds left out (see the docstring)")
        return cases
    flipped = bytearray(state)
    flipped[len(state) // 2] ^= 0xFF
    cases.update({
        "raw_valid": b"\0" + state,
        "raw_cut_half": b"\0" + state[: len(state) // 2],
        "raw_cut_100": b"\0" + state[:100],
        "raw_empty": b"\0",
        "raw_flipped": b"\0" + bytes(flipped),
    })
    return cases


def wordpiece_cases():
    """`options byte, vocab.txt \\0 text` (fuzz_wordpiece.cpp): a small BERT
    vocabulary (the specials, MiniLM's single characters and some words and
    pieces) with texts in several option settings, and malformed vocabularies."""
    lines = (EXAMPLE / "assets" / "bert-wordpiece" / "vocab.txt").read_text(encoding="utf-8").split("\n")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + \
        [t for t in lines[1996:] if len(t.removeprefix("##")) == 1][:400] + lines[1996:2300] + \
        ["##ing", "##ed", "##s", "un", "##aff", "##able", "caf", "##e", "中", "文", "na", "##ive"]
    v = "\n".join(dict.fromkeys(words)).encode("utf-8") + b"\n"

    def one(flags, vocab_bytes, text):
        return bytes([flags]) + vocab_bytes + b"\0" + text

    text = "Unaffable caf\u00e9 NA\u00cfVE \u4e2d\u6587 [CLS] x[MASK]y, it's 3.14!\t\u200b\x00end".encode("utf-8")
    return {
        "valid_uncased": one(0b00011, v, text),
        "valid_cased_strip": one(0b01010, v, text),
        "valid_cased_no_strip": one(0b00110, v, text),
        "valid_short_words": one(0b01110001, v, b"abcdefgh abc a"),
        "valid_invalid_utf8": one(0b00011, v, b"caf\xc3\xa9 \xff\xfe \xe2\x82 the\xf0\x9f\x98\x80"),
        "valid_crlf": one(0b00011, v.replace(b"\n", b"\r\n"), b"  the\tthat \r\n"),
        "valid_long_word": one(0b00011, v, b"a" * 101 + b" " + b"b" * 100),
        "vocab_duplicate": one(0b00011, v + b"the\n", b"x"),
        "vocab_no_unk": one(0b00011, v.replace(b"[UNK]\n", b""), b"x"),
        "vocab_empty_line": one(0b00011, v.replace(b"[MASK]\n", b"[MASK]\n\n"), b"x"),
        "empty_vocab": one(0, b"", b"x"),
    }


def write(name, cases, prefix="seed"):
    out = CORPUS / name
    out.mkdir(parents=True, exist_ok=True)
    for case, data in cases.items():
        (out / f"{prefix}_{case}").write_bytes(data)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "tests" / "golden" / "safetensors").glob("*.safetensors")):
        shutil.copyfile(path, OUT / f"golden_{path.stem}")
    write("safetensors", CASES)
    write("tokenizer", tokenizer_cases())
    write("tokenizer_text", TEXTS)
    write("csv", csv_cases())
    write("roberta_config", config_cases())
    write("evaluator_state", evaluator_state_cases())
    write("evaluator_history", evaluator_history_cases())
    write("training_state", training_state_cases())
    write("wordpiece", wordpiece_cases())


if __name__ == "__main__":
    main()
