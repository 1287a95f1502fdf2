// bitnet-cpp-dump: the tracer half of `ci/refs/bitnet-cpp-ref`, compiled against a user's
// bitnet.cpp build (see ci/refs/README.md, "bitnet-cpp-ref").
//
// bitnet.cpp (github.com/microsoft/BitNet) runs its models with a llama.cpp fork
// (3rdparty/llama.cpp) whose API is the older one: llama_load_model_from_file,
// llama_new_context_with_model, llama_n_vocab(model), `flash_attn` as a bool. Upstream llama.cpp
// still declares those (deprecated) but changed a few; the `compat` section below picks whichever
// the headers have at compile time, so this file builds against both.
//
// It loads MODEL on the CPU, decodes the prompt (in calls of --ubatch tokens) and the greedy
// decode steps, and copies, through the eval callback (`llama_context_params.cb_eval`), every
// graph node that a canonical trace point maps to, as f32, into DIR:
//
//   DIR/dump.jsonl   one JSON object a line, in this order:
//     {"kind":"header", model dimensions, arch, system_info, the request}
//     {"kind":"tensor","name":"Qcur-0","op":"rope","step":0,"chunk":0,"positions":[0,4],
//      "ne":[64,4,4,1],"file":"t000001.f32"}               one per traced node and decode call
//     {"kind":"logits","step":0,"chunk":0,"positions":[0,4],"n_vocab":V,"file":"t000002.f32"}
//     {"kind":"done","generated":[...],"prefill_seconds":...,"decode_seconds":...,...}
//   DIR/t<NNNNNN>.f32  raw little-endian f32 in ggml order (ne[0] varies fastest)
//
// A node is kept by name (`attn_norm-3`, `result_norm`; see TRACED) and, where the name repeats,
// by operation: `Qcur`/`Kcur` after ROPE, the softmax of `kq_soft_max` (`kq_soft_max_ext` in
// bitnet.cpp's fork); the token embeddings are the GET_ROWS of `token_embd.weight` by
// `inp_tokens`, whatever its name. Within one decode call the last node computed with a
// (name, op) wins, as in harness/src/reference/llama.rs. ci/refs/bitnet_cpp_convert.py maps the
// names to canonical points (harness/src/reference/mapping.rs) and writes the trace directory.
//
// --nudge-embeddings feeds input embeddings instead of token ids: each token's embedding row as
// the model itself computes it (the GET_ROWS node, captured in a second context whose graph is
// stopped right after it), nudged up by one f32 ulp.
//
// Errors: one line `bitnet-cpp-dump: error: ...` (then llama.cpp's last log lines), exit 1;
// usage errors exit 2. With BITNET_REF_STREAM_LOG set (the harness sets it) llama.cpp's log is
// streamed to stderr as it comes, so the lines before an abort() survive.
//
// Build (the wrapper does this itself when `$BUILD/bin/bitnet-cpp-dump` is absent), with
// CHECKOUT the BitNet clone and BUILD its CMake build directory:
//
//   c++ -std=c++17 -O2 bitnet_cpp_dump.cpp -o bitnet-cpp-dump
//       -I$CHECKOUT/3rdparty/llama.cpp/include -I$CHECKOUT/3rdparty/llama.cpp/ggml/include
//       $BUILD/3rdparty/llama.cpp/src/libllama.so $BUILD/3rdparty/llama.cpp/ggml/src/libggml.so
//       -Wl,-rpath,$BUILD/3rdparty/llama.cpp/src:$BUILD/3rdparty/llama.cpp/ggml/src -lpthread

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"

#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(__GNUC__)
// The older API this file is written against is deprecated upstream, not removed.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif

namespace {

// ---------------------------------------------------------------------------------------------
// compat: the few calls whose form differs between bitnet.cpp's fork and upstream llama.cpp.
// Each pair of overloads is chosen by SFINAE on what the headers declare; the `int` one is
// preferred when both compile.
// ---------------------------------------------------------------------------------------------

// Vocabulary size: llama_n_vocab(model) in the fork; llama_vocab_n_tokens(llama_model_get_vocab())
// after upstream split the vocabulary out of the model.
template <typename M>
auto n_vocab_of(const M * model, int) -> decltype(llama_n_vocab(model)) {
    return llama_n_vocab(model);
}
template <typename M>
auto n_vocab_of(const M * model, long) -> decltype(llama_vocab_n_tokens(llama_model_get_vocab(model))) {
    return llama_vocab_n_tokens(llama_model_get_vocab(model));
}

// Flash attention off, so the softmax is a graph node: `flash_attn = false` in the fork,
// `flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED` (0) upstream.
template <typename P>
auto disable_flash_attn(P & p, int) -> decltype(p.flash_attn_type, void()) {
    p.flash_attn_type = static_cast<decltype(p.flash_attn_type)>(0);
}
template <typename P>
auto disable_flash_attn(P & p, long) -> decltype(p.flash_attn = false, void()) {
    p.flash_attn = false;
}

// ---------------------------------------------------------------------------------------------
// Errors and llama.cpp's log
// ---------------------------------------------------------------------------------------------

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The end of llama.cpp's log, for error messages.
std::string g_log;
bool g_stream_log = false;

void log_callback(ggml_log_level, const char * text, void *) {
    if (text == nullptr) {
        return;
    }
    if (g_stream_log) {
        fputs(text, stderr);
    }
    g_log += text;
    if (g_log.size() > (64u << 10)) {
        g_log.erase(0, g_log.size() - (32u << 10));
    }
}

std::string log_tail(size_t n_lines) {
    size_t end = g_log.size();
    while (end > 0 && g_log[end - 1] == '\n') {
        end--;
    }
    size_t start = end;
    for (size_t k = 0; k < n_lines && start > 0; k++) {
        start = g_log.rfind('\n', start - 1);
        if (start == std::string::npos) {
            start = 0;
            break;
        }
    }
    return g_log.substr(start == 0 ? 0 : start + 1, end - (start == 0 ? 0 : start + 1));
}

std::string json_string(const std::string & s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20) {
            char buf[8];
            snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out + "\"";
}

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

struct Options {
    std::string model;
    std::vector<llama_token> tokens;
    int generate = 0;
    int threads = 1;
    int ubatch = 0;  // 0: the prompt in one call
    bool nudge = false;
    std::string dump_dir;
};

const char * USAGE =
    "usage: bitnet-cpp-dump MODEL --tokens 1,2,3 [--generate N] [--threads T] [--ubatch U]\n"
    "                       [--nudge-embeddings] --dump-dir DIR";

long parse_count(const std::string & flag, const std::string & v, long min) {
    char * end = nullptr;
    errno = 0;
    long x = strtol(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || errno != 0 || x < min || x > (1L << 30)) {
        throw UsageError("`" + flag + "`: `" + v + "` is not an integer >= " + std::to_string(min));
    }
    return x;
}

Options parse_args(int argc, char ** argv) {
    Options o;
    std::vector<std::string> positional;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                throw UsageError("`" + a + "` needs a value");
            }
            return argv[++i];
        };
        if (a == "--tokens") {
            std::string v = value();
            size_t p = 0;
            while (p <= v.size()) {
                size_t q = v.find(',', p);
                std::string t = v.substr(p, q == std::string::npos ? std::string::npos : q - p);
                if (!t.empty()) {
                    o.tokens.push_back(static_cast<llama_token>(parse_count("--tokens", t, 0)));
                }
                if (q == std::string::npos) {
                    break;
                }
                p = q + 1;
            }
        } else if (a == "--generate") {
            o.generate = static_cast<int>(parse_count(a, value(), 0));
        } else if (a == "--threads") {
            o.threads = static_cast<int>(parse_count(a, value(), 1));
        } else if (a == "--ubatch") {
            o.ubatch = static_cast<int>(parse_count(a, value(), 1));
        } else if (a == "--nudge-embeddings") {
            o.nudge = true;
        } else if (a == "--dump-dir") {
            o.dump_dir = value();
        } else if (a == "-h" || a == "--help") {
            throw UsageError(USAGE);
        } else if (!a.empty() && a[0] == '-') {
            throw UsageError("unknown option `" + a + "`\n" + USAGE);
        } else {
            positional.push_back(a);
        }
    }
    if (positional.size() != 1) {
        throw UsageError(std::string("expected one MODEL argument\n") + USAGE);
    }
    o.model = positional[0];
    if (o.tokens.empty()) {
        throw UsageError("no input tokens (`--tokens`)");
    }
    if (o.dump_dir.empty()) {
        throw UsageError("no `--dump-dir`");
    }
    return o;
}

// ---------------------------------------------------------------------------------------------
// The eval callback: which nodes to keep, and their values as f32
// ---------------------------------------------------------------------------------------------

enum class Op { Other, Rope, SoftMax, TokenRows };

const char * op_name(Op op) {
    switch (op) {
        case Op::Rope: return "rope";
        case Op::SoftMax: return "soft_max";
        case Op::TokenRows: return "token_rows";
        default: return "other";
    }
}

// The nodes a canonical point maps to, in bitnet.cpp's fork and upstream: name without the
// `-<layer>` suffix, whether it has one, and the operation it must have (Other: any).
struct Traced {
    const char * name;
    bool layer;
    Op op;
};

const Traced TRACED[] = {
    {"attn_norm", true, Op::Other},
    {"Qcur", true, Op::Rope},
    {"Kcur", true, Op::Rope},
    {"Vcur", true, Op::Other},
    {"kq_soft_max", true, Op::SoftMax},      // upstream
    {"kq_soft_max_ext", true, Op::SoftMax},  // bitnet.cpp's llm_build_kqv
    {"kqv_out", true, Op::Other},
    {"attn_sub_norm", true, Op::Other},
    {"attn_out", true, Op::Other},    // upstream
    {"attn_o_out", true, Op::Other},  // bitnet.cpp's build_bitnet / build_bitnet_158
    {"ffn_inp", true, Op::Other},
    {"ffn_norm", true, Op::Other},
    {"ffn_sub_out", true, Op::Other},  // `bitnet`: silu(gate)·up
    {"ffn_out", true, Op::Other},      // bitnet.cpp's build_bitnet_158: relu(gate)²·up
    {"ffn_sub_norm", true, Op::Other},
    {"ffn_down", true, Op::Other},
    {"l_out", true, Op::Other},
    {"result_norm", false, Op::Other},
    {"result_output", false, Op::Other},
};

Op op_of(const ggml_tensor * t) {
    switch (t->op) {
        case GGML_OP_ROPE: return Op::Rope;
        case GGML_OP_SOFT_MAX: return Op::SoftMax;
        case GGML_OP_GET_ROWS:
            if (t->src[0] != nullptr && t->src[1] != nullptr &&
                strcmp(t->src[0]->name, "token_embd.weight") == 0 &&
                strcmp(t->src[1]->name, "inp_tokens") == 0) {
                return Op::TokenRows;
            }
            return Op::Other;
        default: return Op::Other;
    }
}

bool name_is_traced(const char * name, Op op) {
    std::string base = name;
    bool layer = false;
    size_t dash = base.rfind('-');
    if (dash != std::string::npos && dash + 1 < base.size() &&
        base.find_first_not_of("0123456789", dash + 1) == std::string::npos) {
        base.resize(dash);
        layer = true;
    }
    for (const Traced & t : TRACED) {
        if (base == t.name && layer == t.layer) {
            return t.op == Op::Other || t.op == op;
        }
    }
    return false;
}

struct Node {
    std::string name;
    Op op = Op::Other;
    int64_t ne[4] = {0, 0, 0, 0};
    std::vector<float> values;
};

// What the callback fills during one llama_decode.
struct Capture {
    bool token_input = true;  // a token batch: its GET_ROWS node exists
    bool probe = false;       // keep only the token rows, then stop the graph
    std::map<std::pair<std::string, Op>, Node> nodes;
    std::string error;
};

// A node's values as f32, in ggml order; strides are followed, so a view is read correctly.
std::vector<float> values_of(const ggml_tensor * t) {
    const size_t nbytes = ggml_nbytes(t);
    std::vector<uint8_t> raw(nbytes);
    if (t->buffer != nullptr) {
        ggml_backend_tensor_get(t, raw.data(), 0, nbytes);  // also from non-host memory
    } else {
        memcpy(raw.data(), t->data, nbytes);
    }
    std::vector<float> out(static_cast<size_t>(ggml_nelements(t)));
    const size_t esize = ggml_type_size(t->type);
    float * o = out.data();
    for (int64_t i3 = 0; i3 < t->ne[3]; i3++) {
        for (int64_t i2 = 0; i2 < t->ne[2]; i2++) {
            for (int64_t i1 = 0; i1 < t->ne[1]; i1++) {
                const uint8_t * row = raw.data() + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3];
                for (int64_t i0 = 0; i0 < t->ne[0]; i0++, o++) {
                    const uint8_t * e = row + i0 * t->nb[0];
                    if (t->type == GGML_TYPE_F32) {
                        memcpy(o, e, sizeof(float));
                    } else {
                        ggml_fp16_t h;
                        memcpy(&h, e, esize);
                        ggml_fp16_to_fp32_row(&h, o, 1);
                    }
                }
            }
        }
    }
    return out;
}

bool eval_callback(ggml_tensor * t, bool ask, void * user) {
    Capture * cap = static_cast<Capture *>(user);
    const Op op = op_of(t);
    bool want = (t->type == GGML_TYPE_F32 || t->type == GGML_TYPE_F16);
    if (op == Op::TokenRows) {
        want = want && cap->token_input;
    } else {
        want = want && !cap->probe && name_is_traced(t->name, op);
    }
    if (ask) {
        return want;
    }
    if (!want) {
        return true;
    }
    try {
        Node n;
        n.name = t->name;
        n.op = op;
        for (int i = 0; i < 4; i++) {
            n.ne[i] = t->ne[i];
        }
        n.values = values_of(t);
        cap->nodes[{n.name, op}] = std::move(n);
    } catch (const std::exception & e) {
        cap->error = std::string("copying `") + t->name + "`: " + e.what();
        return false;
    }
    // In the probe context nothing after the token rows is needed: stop the graph there.
    return !(cap->probe && op == Op::TokenRows);
}

// ---------------------------------------------------------------------------------------------
// The dump directory
// ---------------------------------------------------------------------------------------------

struct Dump {
    std::string dir;
    FILE * index = nullptr;
    int next = 0;

    explicit Dump(const std::string & d) : dir(d) {
        std::string path = dir + "/dump.jsonl";
        index = fopen(path.c_str(), "wb");
        if (index == nullptr) {
            throw std::runtime_error("cannot write `" + path + "`: " + strerror(errno));
        }
    }
    ~Dump() {
        if (index != nullptr) {
            fclose(index);
        }
    }
    Dump(const Dump &) = delete;
    Dump & operator=(const Dump &) = delete;

    void line(const std::string & json) {
        if (fputs(json.c_str(), index) < 0 || fputc('\n', index) < 0 || fflush(index) != 0) {
            throw std::runtime_error("cannot write `" + dir + "/dump.jsonl`: " + strerror(errno));
        }
    }

    // Write `n` floats to a new file; returns its name.
    std::string values(const float * v, size_t n) {
        char name[32];
        snprintf(name, sizeof name, "t%06d.f32", next++);
        std::string path = dir + "/" + name;
        FILE * f = fopen(path.c_str(), "wb");
        bool ok = f != nullptr && fwrite(v, sizeof(float), n, f) == n;
        ok = (f != nullptr && fclose(f) == 0) && ok;
        if (!ok) {
            throw std::runtime_error("cannot write `" + path + "`: " + strerror(errno));
        }
        return name;
    }
};

std::string positions_json(int p0, int p1) {
    return "[" + std::to_string(p0) + "," + std::to_string(p1) + "]";
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

struct ModelDeleter {
    void operator()(llama_model * m) const { llama_free_model(m); }
};
struct ContextDeleter {
    void operator()(llama_context * c) const { llama_free(c); }
};
using ModelPtr = std::unique_ptr<llama_model, ModelDeleter>;
using ContextPtr = std::unique_ptr<llama_context, ContextDeleter>;

struct BatchGuard {
    llama_batch b;
    ~BatchGuard() { llama_batch_free(b); }
};

// Decode `tokens` (or `embd`, n_embd floats per token) at positions pos0..; every position's
// logits when `n_vocab` > 0.
std::vector<float> decode(llama_context * ctx, const std::vector<llama_token> & tokens,
                          const std::vector<float> * embd, int n_embd, int pos0, int n_vocab) {
    const int m = static_cast<int>(tokens.size());
    BatchGuard g{llama_batch_init(m, embd != nullptr ? n_embd : 0, 1)};
    for (int i = 0; i < m; i++) {
        if (embd != nullptr) {
            memcpy(g.b.embd + static_cast<size_t>(i) * n_embd, embd->data() + static_cast<size_t>(i) * n_embd,
                   sizeof(float) * n_embd);
        } else {
            g.b.token[i] = tokens[i];
        }
        g.b.pos[i] = pos0 + i;
        g.b.n_seq_id[i] = 1;
        g.b.seq_id[i][0] = 0;
        g.b.logits[i] = 1;
    }
    g.b.n_tokens = m;
    const int rc = llama_decode(ctx, g.b);
    if (rc != 0) {
        throw std::runtime_error("llama_decode failed with code " + std::to_string(rc) + " at position " +
                                 std::to_string(pos0));
    }
    std::vector<float> logits;
    if (n_vocab > 0) {
        logits.reserve(static_cast<size_t>(m) * n_vocab);
        for (int i = 0; i < m; i++) {
            const float * p = llama_get_logits_ith(ctx, i);
            if (p == nullptr) {
                throw std::runtime_error("llama.cpp returned no logits for position " + std::to_string(pos0 + i));
            }
            logits.insert(logits.end(), p, p + n_vocab);
        }
    }
    return logits;
}

// The harness's greedy choice: the first index of the largest value (NaN never wins).
llama_token argmax(const float * v, int n) {
    int best = 0;
    for (int i = 0; i < n; i++) {
        if (v[i] > v[best]) {
            best = i;
        }
    }
    return best;
}

// One f32 ulp up, as the engine's `next_up`.
float next_up(float v) {
    if (std::isnan(v) || v == INFINITY) {
        return v;
    }
    if (v == 0.0f) {
        uint32_t one = 1;
        float tiny;
        memcpy(&tiny, &one, sizeof tiny);
        return tiny;
    }
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    b = v > 0.0f ? b + 1 : b - 1;
    memcpy(&v, &b, sizeof b);
    return v;
}

std::string meta(const llama_model * model, const std::string & key) {
    char buf[256];
    const int n = llama_model_meta_val_str(model, key.c_str(), buf, sizeof buf);
    return n < 0 ? std::string() : std::string(buf);
}

std::string build_arch() {
#if defined(__x86_64__) || defined(_M_X64)
    return "x86_64";
#elif defined(__aarch64__) || defined(_M_ARM64)
    return "aarch64";
#else
    return "unknown";
#endif
}

void run(const Options & o) {
    llama_log_set(log_callback, nullptr);
    llama_backend_init();

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    ModelPtr model(llama_load_model_from_file(o.model.c_str(), mp));
    if (!model) {
        throw std::runtime_error("llama.cpp could not load `" + o.model + "`");
    }
    const int n_vocab = n_vocab_of(model.get(), 0);
    const int n_embd = llama_n_embd(model.get());
    const int n_head = llama_n_head(model.get());
    const int n_layer = llama_n_layer(model.get());
    const std::string arch = meta(model.get(), "general.architecture");
    const std::string kv = meta(model.get(), arch + ".attention.head_count_kv");
    const int n_head_kv = atoi(kv.c_str()) > 0 ? atoi(kv.c_str()) : n_head;
    for (llama_token t : o.tokens) {
        if (t >= n_vocab) {
            throw std::runtime_error("token id " + std::to_string(t) + " is outside the vocabulary (n_vocab " +
                                     std::to_string(n_vocab) + ")");
        }
    }

    const int n = static_cast<int>(o.tokens.size());
    const int total = n + o.generate;
    // The context `harness ref-trace` makes (harness/src/reference/llama.rs): F32 KV cache,
    // flash attention off, batches of the whole prompt.
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = static_cast<uint32_t>((total + 255) / 256 * 256);
    cp.n_batch = static_cast<uint32_t>(n);
    cp.n_ubatch = static_cast<uint32_t>(n);
    cp.n_seq_max = 1;
    cp.n_threads = o.threads;
    cp.n_threads_batch = o.threads;
    cp.type_k = GGML_TYPE_F32;
    cp.type_v = GGML_TYPE_F32;
    disable_flash_attn(cp, 0);
    cp.no_perf = true;

    Capture cap;
    cap.token_input = !o.nudge;
    cp.cb_eval = eval_callback;
    cp.cb_eval_user_data = &cap;
    ContextPtr ctx(llama_new_context_with_model(model.get(), cp));
    if (!ctx) {
        // llama.cpp before late 2024 (bitnet.cpp's fork) stores V in F16 unless flash attention
        // is on ("V cache quantization requires flash_attn"): the V values are then rounded to
        // f16 in the cache, a difference from the engine that the tolerances must absorb.
        cp.type_v = GGML_TYPE_F16;
        ctx.reset(llama_new_context_with_model(model.get(), cp));
        if (!ctx) {
            throw std::runtime_error("llama.cpp could not create a context (F32 KV cache, nor F32 K and F16 V)");
        }
        fprintf(stderr, "bitnet-cpp-dump: note: this llama.cpp needs an F16 V cache without flash attention; "
                        "the reference's attention then reads V rounded to f16\n");
    }
    // --nudge-embeddings: a second context only to read token embedding rows through the model.
    Capture probe;
    probe.probe = true;
    ContextPtr probe_ctx;
    if (o.nudge) {
        cp.cb_eval_user_data = &probe;
        probe_ctx.reset(llama_new_context_with_model(model.get(), cp));
        if (!probe_ctx) {
            throw std::runtime_error("llama.cpp could not create a second context (for --nudge-embeddings)");
        }
    }

    Dump dump(o.dump_dir);
    const std::string system_info = llama_print_system_info();
    std::string tokens_json;
    for (llama_token t : o.tokens) {
        tokens_json += (tokens_json.empty() ? "" : ",") + std::to_string(t);
    }
    dump.line("{\"kind\":\"header\",\"format\":1,\"arch\":" + json_string(arch) +
              ",\"n_vocab\":" + std::to_string(n_vocab) + ",\"n_embd\":" + std::to_string(n_embd) +
              ",\"n_head\":" + std::to_string(n_head) + ",\"n_head_kv\":" + std::to_string(n_head_kv) +
              ",\"n_layer\":" + std::to_string(n_layer) + ",\"build_arch\":" + json_string(build_arch()) +
              ",\"system_info\":" + json_string(system_info) + ",\"tokens\":[" + tokens_json +
              "],\"generate\":" + std::to_string(o.generate) + ",\"ubatch\":" + std::to_string(o.ubatch) +
              ",\"threads\":" + std::to_string(o.threads) + ",\"kv_cache\":\"K " +
              ggml_type_name(cp.type_k) + ", V " + ggml_type_name(cp.type_v) + "\",\"nudge_embeddings\":" +
              (o.nudge ? "true" : "false") + "}");

    std::vector<llama_token> generated;
    double prefill_seconds = 0, decode_seconds = 0;
    int pos0 = 0;
    const int ubatch = o.ubatch > 0 ? o.ubatch : n;
    for (int step = 0; step < (o.generate > 0 ? o.generate : 1); step++) {
        const std::vector<llama_token> step_tokens =
            step == 0 ? o.tokens : std::vector<llama_token>{generated.back()};
        const int m = static_cast<int>(step_tokens.size());
        const int chunk_size = step == 0 ? ubatch : 1;
        std::vector<float> last_logits;
        for (int c0 = 0, chunk = 0; c0 < m; c0 += chunk_size, chunk++) {
            const int c1 = c0 + chunk_size < m ? c0 + chunk_size : m;
            const std::vector<llama_token> toks(step_tokens.begin() + c0, step_tokens.begin() + c1);
            const int p0 = pos0 + c0, p1 = pos0 + c1;
            std::vector<float> embd;
            if (o.nudge) {
                probe.nodes.clear();
                decode(probe_ctx.get(), toks, nullptr, 0, p0, 0);
                if (!probe.error.empty()) {
                    throw std::runtime_error(probe.error);
                }
                if (probe.nodes.size() != 1 ||
                    probe.nodes.begin()->second.values.size() != static_cast<size_t>(n_embd) * toks.size()) {
                    throw std::runtime_error(
                        "--nudge-embeddings: this build's graph has no token embedding rows (a GET_ROWS of "
                        "`token_embd.weight` by `inp_tokens`) to read the input embeddings from");
                }
                embd = std::move(probe.nodes.begin()->second.values);
                for (float & v : embd) {
                    v = next_up(v);
                }
            }
            cap.nodes.clear();
            const auto t0 = std::chrono::steady_clock::now();
            std::vector<float> logits = decode(ctx.get(), toks, o.nudge ? &embd : nullptr, n_embd, p0, n_vocab);
            const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            (step == 0 ? prefill_seconds : decode_seconds) += dt;
            if (!cap.error.empty()) {
                throw std::runtime_error(cap.error);
            }
            const std::string where = ",\"step\":" + std::to_string(step) + ",\"chunk\":" + std::to_string(chunk) +
                                      ",\"positions\":" + positions_json(p0, p1);
            for (const auto & kv_node : cap.nodes) {
                const Node & node = kv_node.second;
                const std::string file = dump.values(node.values.data(), node.values.size());
                dump.line("{\"kind\":\"tensor\",\"name\":" + json_string(node.name) + ",\"op\":\"" +
                          op_name(node.op) + "\"" + where + ",\"ne\":[" + std::to_string(node.ne[0]) + "," +
                          std::to_string(node.ne[1]) + "," + std::to_string(node.ne[2]) + "," +
                          std::to_string(node.ne[3]) + "],\"file\":\"" + file + "\"}");
            }
            if (step == 0) {
                const std::string file = dump.values(logits.data(), logits.size());
                dump.line("{\"kind\":\"logits\"" + where + ",\"n_vocab\":" + std::to_string(n_vocab) +
                          ",\"file\":\"" + file + "\"}");
            }
            last_logits = std::move(logits);
        }
        if (o.generate > 0) {
            generated.push_back(argmax(last_logits.data() + (last_logits.size() - n_vocab), n_vocab));
        }
        pos0 += m;
    }
    std::string gen_json;
    for (llama_token t : generated) {
        gen_json += (gen_json.empty() ? "" : ",") + std::to_string(t);
    }
    char timing[256];
    snprintf(timing, sizeof timing,
             "\"prefill_seconds\":%.9g,\"decode_seconds\":%.9g,\"prefill_tokens\":%d,\"decode_calls\":%d",
             prefill_seconds, decode_seconds, n, o.generate > 1 ? o.generate - 1 : 0);
    dump.line("{\"kind\":\"done\",\"generated\":[" + gen_json + "]," + timing + "}");
}

}  // namespace

int main(int argc, char ** argv) {
    g_stream_log = getenv("BITNET_REF_STREAM_LOG") != nullptr;
    try {
        run(parse_args(argc, argv));
    } catch (const UsageError & e) {
        fprintf(stderr, "bitnet-cpp-dump: error: %s\n", e.what());
        return 2;
    } catch (const std::exception & e) {
        fprintf(stderr, "bitnet-cpp-dump: error: %s\n", e.what());
        const std::string tail = log_tail(20);
        if (!g_stream_log && !tail.empty()) {
            fprintf(stderr, "llama.cpp log (last lines):\n%s\n", tail.c_str());
        }
        return 1;
    }
    llama_backend_free();
    return 0;
}
