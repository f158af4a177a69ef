"""`make bench-npu`: a small ctypes binding of the RKLLM runtime's 1.3.0 ABI, written from
docs/rkllm-abi.md §7 and independent of the agent's Rust bindings, so the bench can
drive the same `librkllmrt.so` directly and measure "the library's own rate".

Only what the bench needs: createDefaultParam, init, run, clear_kv_cache, destroy. LP64 only
(x86-64, aarch64); every struct size is asserted against the reference at import.
"""
from __future__ import annotations

import ctypes as C
import time
from dataclasses import dataclass, field

# --- enums (C int) -----------------------------------------------------------------------------
RUN_NORMAL, RUN_WAITING, RUN_FINISH, RUN_ERROR = 0, 1, 2, 3
INPUT_PROMPT = 0
INFER_GENERATE = 0


# --- structs (docs/rkllm-abi.md §7, 1.3.0, LP64) --------------------------------------------------
class RKLLMExtendParam(C.Structure):
    _fields_ = [
        ("base_domain_id", C.c_int32),
        ("embed_flash", C.c_int8),
        ("enabled_cpus_num", C.c_int8),
        ("enabled_cpus_mask", C.c_uint32),
        ("n_batch", C.c_uint8),
        ("use_cross_attn", C.c_int8),
        ("reserved", C.c_uint8 * 104),
    ]


class RKLLMParam(C.Structure):
    _fields_ = [
        ("model_path", C.c_char_p),
        ("max_context_len", C.c_int32),
        ("max_new_tokens", C.c_int32),
        ("top_k", C.c_int32),
        ("n_keep", C.c_int32),
        ("top_p", C.c_float),
        ("temperature", C.c_float),
        ("repeat_penalty", C.c_float),
        ("frequency_penalty", C.c_float),
        ("presence_penalty", C.c_float),
        ("mirostat", C.c_int32),
        ("mirostat_tau", C.c_float),
        ("mirostat_eta", C.c_float),
        ("skip_special_token", C.c_bool),
        ("ignore_eos_token", C.c_bool),
        ("is_async", C.c_bool),
        ("extend_param", RKLLMExtendParam),
    ]


class RKLLMEmbedInput(C.Structure):
    _fields_ = [("embed", C.POINTER(C.c_float)), ("n_tokens", C.c_size_t)]


class RKLLMTokenInput(C.Structure):
    _fields_ = [("input_ids", C.POINTER(C.c_int32)), ("n_tokens", C.c_size_t)]


class RKLLMImage(C.Structure):
    _fields_ = [
        ("image_embed", C.POINTER(C.c_float)),
        ("n_image_tokens", C.c_size_t),
        ("n_image", C.c_size_t),
        ("image_start", C.c_char_p),
        ("image_end", C.c_char_p),
        ("image_content", C.c_char_p),
        ("image_width", C.c_size_t),
        ("image_height", C.c_size_t),
    ]


class RKLLMVideo(C.Structure):
    _fields_ = [
        ("video_embed", C.POINTER(C.c_float)),
        ("n_frame_tokens", C.c_size_t),
        ("n_frame_per_video", C.c_size_t),
        ("n_video", C.c_size_t),
        ("video_start", C.c_char_p),
        ("video_end", C.c_char_p),
        ("video_content", C.c_char_p),
        ("frame_width", C.c_size_t),
        ("frame_height", C.c_size_t),
    ]


class RKLLMMultiModalInput(C.Structure):
    _fields_ = [("prompt", C.c_char_p), ("image", RKLLMImage), ("video", RKLLMVideo)]


class RKLLMInputUnion(C.Union):
    _fields_ = [
        ("prompt_input", C.c_char_p),
        ("embed_input", RKLLMEmbedInput),
        ("token_input", RKLLMTokenInput),
        ("multimodal_input", RKLLMMultiModalInput),
    ]


class RKLLMInput(C.Structure):
    _anonymous_ = ("u",)
    _fields_ = [
        ("role", C.c_char_p),
        ("enable_thinking", C.c_bool),
        ("input_type", C.c_int),
        ("u", RKLLMInputUnion),
    ]


class RKLLMInferParam(C.Structure):
    _fields_ = [
        ("mode", C.c_int),
        ("lora_params", C.c_void_p),
        ("prompt_cache_params", C.c_void_p),
        ("sampling_params", C.c_void_p),
        ("keep_history", C.c_int),
        ("max_new_tokens", C.c_int32),
    ]


class RKLLMResultLastHiddenLayer(C.Structure):
    _fields_ = [("hidden_states", C.POINTER(C.c_float)), ("embd_size", C.c_int), ("num_tokens", C.c_int)]


class RKLLMResultLogits(C.Structure):
    _fields_ = [("logits", C.POINTER(C.c_float)), ("vocab_size", C.c_int), ("num_tokens", C.c_int)]


class RKLLMPerfStat(C.Structure):
    _fields_ = [
        ("prefill_time_ms", C.c_float),
        ("prefill_tokens", C.c_int),
        ("generate_time_ms", C.c_float),
        ("generate_tokens", C.c_int),
        ("memory_usage_mb", C.c_float),
    ]


class RKLLMResult(C.Structure):
    _fields_ = [
        ("text", C.c_char_p),
        ("token_id", C.c_int32),
        ("last_hidden_layer", RKLLMResultLastHiddenLayer),
        ("logits", RKLLMResultLogits),
        ("perf", RKLLMPerfStat),
    ]


# int cb(RKLLMResult*, void* userdata, LLMCallState state)
LLMResultCallback = C.CFUNCTYPE(C.c_int, C.POINTER(RKLLMResult), C.c_void_p, C.c_int)


class RKLLMCallback(C.Structure):
    _fields_ = [
        ("result_callback", LLMResultCallback),
        ("result_userdata", C.c_void_p),
        ("tokenizer_callback", C.c_void_p),
        ("tokenizer_userdata", C.c_void_p),
        ("embed_callback", C.c_void_p),
        ("embed_userdata", C.c_void_p),
    ]


# The reference's sizes (and a few offsets where padding decides them).
_SIZES = {RKLLMExtendParam: 120, RKLLMParam: 184, RKLLMMultiModalInput: 144, RKLLMInput: 160,
          RKLLMInferParam: 40, RKLLMPerfStat: 20, RKLLMResult: 72, RKLLMCallback: 48}
_OFFSETS = [(RKLLMParam, "skip_special_token", 56), (RKLLMParam, "is_async", 58), (RKLLMParam, "extend_param", 60),
            (RKLLMExtendParam, "enabled_cpus_mask", 8), (RKLLMExtendParam, "n_batch", 12),
            (RKLLMInput, "input_type", 12), (RKLLMInput, "u", 16), (RKLLMInferParam, "keep_history", 32),
            (RKLLMInferParam, "max_new_tokens", 36), (RKLLMResult, "perf", 48)]
assert C.sizeof(C.c_void_p) == 8, "LP64 only"
for _t, _n in _SIZES.items():
    assert C.sizeof(_t) == _n, f"sizeof({_t.__name__}) = {C.sizeof(_t)}, the 1.3.0 ABI says {_n}"
for _t, _f, _o in _OFFSETS:
    assert getattr(_t, _f).offset == _o, f"{_t.__name__}.{_f} at {getattr(_t, _f).offset}, expected {_o}"


# --- one run's record --------------------------------------------------------------------------
@dataclass
class RunRecord:
    t_call: float = 0.0                        # perf_counter() just before rkllm_run
    t_return: float = 0.0
    token_times: list[float] = field(default_factory=list)  # NORMAL callbacks that carry text
    chunks: list[bytes] = field(default_factory=list)  # raw text of every NORMAL/WAITING callback
    waiting: int = 0                           # WAITING callbacks (incomplete UTF-8)
    perf: dict | None = None                   # from the FINISH callback
    state_error: bool = False
    rc: int = 0

    @property
    def ttft_s(self) -> float | None:
        return self.token_times[0] - self.t_call if self.token_times else None

    @property
    def decode_tps(self) -> float | None:
        """Tokens per second between the first and the last token callback."""
        t = self.token_times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 2 and t[-1] > t[0] else None

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", errors="replace")


class Rkllm:
    """One `LLMHandle` of a 1.3.0 runtime, driven synchronously from the calling thread."""

    def __init__(self, lib_path: str, model_path: str, max_context_len: int = 4096, n_batch: int = 1):
        self.lib = lib = C.CDLL(lib_path)
        lib.rkllm_createDefaultParam.restype = RKLLMParam
        lib.rkllm_createDefaultParam.argtypes = []
        lib.rkllm_init.restype = C.c_int
        lib.rkllm_init.argtypes = [C.POINTER(C.c_void_p), C.POINTER(RKLLMParam), C.POINTER(RKLLMCallback)]
        lib.rkllm_run.restype = C.c_int
        lib.rkllm_run.argtypes = [C.c_void_p, C.POINTER(RKLLMInput), C.POINTER(RKLLMInferParam), C.c_void_p]
        lib.rkllm_clear_kv_cache.restype = C.c_int
        lib.rkllm_clear_kv_cache.argtypes = [C.c_void_p, C.c_int, C.POINTER(C.c_int), C.POINTER(C.c_int)]
        lib.rkllm_destroy.restype = C.c_int
        lib.rkllm_destroy.argtypes = [C.c_void_p]

        self._model = model_path.encode()  # kept alive: the param struct points into it
        p = lib.rkllm_createDefaultParam()
        p.model_path = self._model
        p.max_context_len = max_context_len
        p.max_new_tokens = max_context_len
        p.n_keep = -1
        p.skip_special_token = True
        p.is_async = False
        p.extend_param.base_domain_id = 0
        p.extend_param.embed_flash = 1
        p.extend_param.enabled_cpus_num = 4
        p.extend_param.enabled_cpus_mask = 0xF0  # CPU4-7, the RK3588 big cores (as the vendor demos)
        p.extend_param.n_batch = n_batch
        self._rec: RunRecord | None = None
        self._cb = LLMResultCallback(self._on_result)  # referenced for the handle's lifetime
        self._callbacks = RKLLMCallback()
        self._callbacks.result_callback = self._cb
        self.handle = C.c_void_p()
        rc = lib.rkllm_init(C.byref(self.handle), C.byref(p), C.byref(self._callbacks))
        if rc != 0 or not self.handle:
            raise RuntimeError(f"rkllm_init({model_path}) returned {rc}")

    def _on_result(self, result, _userdata, state) -> int:
        now = time.perf_counter()
        rec = self._rec
        if rec is None:
            return 0
        if state == RUN_NORMAL:
            t = result.contents.text
            if t:
                rec.token_times.append(now)
                rec.chunks.append(t)
        elif state == RUN_WAITING:
            rec.waiting += 1
            rec.chunks.append(result.contents.text or b"")
        elif state == RUN_FINISH:
            pf = result.contents.perf
            rec.perf = {"prefill_time_ms": pf.prefill_time_ms, "prefill_tokens": pf.prefill_tokens,
                        "generate_time_ms": pf.generate_time_ms, "generate_tokens": pf.generate_tokens}
        elif state == RUN_ERROR:
            rec.state_error = True
        return 0

    def clear_kv_cache(self, keep_system_prompt: bool) -> int:
        return self.lib.rkllm_clear_kv_cache(self.handle, int(keep_system_prompt), None, None)

    def run(self, prompt: str, max_new_tokens: int, keep_history: bool = True,
            enable_thinking: bool = False) -> RunRecord:
        """One blocking text-prompt run (role user); callbacks arrive on this thread."""
        text = prompt.encode()
        inp = RKLLMInput()
        inp.role = b"user"
        inp.enable_thinking = enable_thinking
        inp.input_type = INPUT_PROMPT
        inp.prompt_input = text
        ip = RKLLMInferParam()
        ip.mode = INFER_GENERATE
        ip.keep_history = int(keep_history)
        ip.max_new_tokens = max_new_tokens
        rec = self._rec = RunRecord()
        rec.t_call = time.perf_counter()
        rec.rc = self.lib.rkllm_run(self.handle, C.byref(inp), C.byref(ip), None)
        rec.t_return = time.perf_counter()
        self._rec = None
        return rec

    def close(self) -> None:
        if self.handle:
            self.lib.rkllm_destroy(self.handle)
            self.handle = C.c_void_p()
