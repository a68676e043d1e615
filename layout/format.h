/* format.h: the inflash store format, specified once, plus the small
 * constants and dtype helpers every module shares.
 *
 * THE INFLASH STORE, format version 2
 * ===================================
 *
 * 1. A store is a directory holding exactly three files:
 *      index.sqlite   sqlite3 database: hyperparameters, tokenizer, tensor
 *                     table, neuron table (section 4)
 *      dense.bin      every tensor that stays resident in DRAM (section 2)
 *      ffn.bin        the FFN neuron bundles, read sparsely from flash
 *                     (section 3)
 *    All numbers in the .bin files are little-endian. A store has one
 *    dtype (meta key `dtype`):
 *      "f32"   IEEE-754 binary32, 4 bytes per value
 *      "f16"   IEEE-754 binary16, 2 bytes per value
 *      "q8_0"  blocks of 32 values, 34 bytes: f16 scale d, then 32 int8 q;
 *              value i = q[i] * d
 *      "q4_0"  blocks of 32 values, 18 bytes: f16 scale d, then 16 bytes;
 *              byte i holds value i in its low nibble and value i+16 in
 *              its high nibble; value = (nibble - 8) * d
 *    The two block layouts are ggml's block_q8_0 / block_q4_0 byte for byte
 *    (ggml-common.h), and values are quantized with ggml's reference
 *    rounding, quantize_row_q8_0_ref / quantize_row_q4_0_ref in
 *    ggml/src/ggml-quants.c (read in ollama/ollama's vendored copy,
 *    ml/backend/ggml/ggml/src/ggml-quants.c), written anew in layout/quant.c:
 *      q8_0: amax = max |x|, d = amax / 127, q = roundf(x / d) (halves away
 *            from zero; x / d computed as x * (1/d); q = 0 when d = 0 or
 *            when 1/d overflows, a block of magnitudes below ~3.7e-37,
 *            where ggml's formula is undefined; the same for q4_0)
 *      q4_0: m = the x of largest |x| (first such), d = m / -8,
 *            nibble = min(15, (int)(x * (1/d) + 8.5)) truncated toward 0
 *    and the scale is stored as f16 (round-to-nearest-even) after 1/d is
 *    taken from the unrounded d. A quantized row is a whole number of
 *    blocks, so a quantized store needs d_model and the attention width
 *    (n_heads * head_dim) to be multiples of 32.
 *    In a quantized store every matrix (ndim >= 2: attention projections,
 *    embeddings, the output head, the FFN's rows and columns) is in the
 *    store dtype; 1-D tensors (norm weights, biases) are f32. In an f32 or
 *    f16 store every weight is in the store dtype. Calibration data added
 *    later (predictors) is always f32. fmt_tensor_dtype() is this rule.
 *
 * 2. Both .bin files start with a 4096-byte header block; payload begins at
 *    offset 4096 (IFL_HEADER_BYTES). The header, field by field:
 *      off  size  field
 *      0    8     magic "INFLASH\0" (IFL_MAGIC)
 *      8    4     u32 format version (IFL_VERSION)
 *      12   4     u32 file kind: 1 = dense.bin, 2 = ffn.bin
 *      16   8     u64 total file size in bytes (including this header)
 *      24   8     u64 payload count: tensors in dense.bin, layers in ffn.bin
 *      32   4064  zero
 *    dense.bin: tensors one after another, each starting on a 64-byte
 *    (IFL_TENSOR_ALIGN) boundary, zero padding between them; where each one
 *    lives is recorded only in the `tensors` table.
 *
 * 3. ffn.bin: after the header, layer 0, layer 1, ..., each layer starting
 *    on a 4096-byte (IFL_LAYER_ALIGN) boundary, zero padding between layers
 *    and at the end of the file. A layer is d_ffn bundles of B bytes
 *    (B = meta `bundle_bytes`), stored at physical slots 0..d_ffn-1:
 *      offset(layer, slot) = layers.offset + slot * B
 *    The bundle of neuron j holds, each part in the store dtype (so each a
 *    whole number of blocks in a quantized store, and a bundle is
 *    self-contained):
 *      up row j      d_model values  (OPT: fc1.weight[j,:];
 *                                     Llama: mlp.up_proj.weight[j,:])
 *      gate row j    d_model values  (gated models only:
 *                                     mlp.gate_proj.weight[j,:])
 *      down col j    d_model values  (OPT: fc2.weight[:,j];
 *                                     Llama: mlp.down_proj.weight[:,j])
 *    so B = (gated ? 3 : 2) * bytes(d_model values) (f16, d_model 4096,
 *    ungated: 16384; q4_0: 4608, not a multiple of 1 KiB). The down column
 *    is quantized along d_model by inflash (a GGUF's ffn_down blocks run
 *    along d_ffn, across neurons). Neuron j sits at slot
 *    `neurons.slot`; at pack time slot = j, after calibration with
 *    --reorder the slots are a permutation (hot neurons first). FFN biases
 *    live in dense.bin.
 *
 * 4. index.sqlite tables (every integer is sqlite INTEGER, 64-bit):
 *      meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)
 *        magic "INFLASH", format_version "2" (version 1 had no quantized
 *        dtypes; this build reads only 2), family ("opt" | "llama"),
 *        d_model, n_layers, n_heads, n_kv_heads, d_ffn, vocab_size,
 *        max_pos, pos_offset (OPT: 2, else 0), norm_eps, rope_theta,
 *        activation ("relu" | "silu" | "fatrelu" | "drelu" | "cats": the
 *        FFN term of each, layout/activity.h), act_params (only for an
 *        activation with a per-layer parameter, fatrelu's threshold and
 *        cats's thresholds: n_layers decimal numbers separated by single
 *        spaces, each reading back to the same f32, finite and >= 0),
 *        gated ("0" | "1"),
 *        tie_embeddings ("0" | "1"), bos_id, eos_id, pad_id (-1 if none),
 *        sliding_window (Mistral: position i attends to positions j with
 *        i - W < j <= i; the key is present only for a model with a
 *        window, absent = none),
 *        dtype ("f32" | "f16" | "q8_0" | "q4_0"), bundle_bytes, dense_bytes, ffn_bytes
 *        (exact sizes of the .bin files), tokenizer ("gpt2-bpe" |
 *        "sp-bpe" | "bytelevel-bpe"), hf_config (the source config.json
 *        text, verbatim), source_dtype ("F32" | "F16" | "BF16").
 *      tokens(id INTEGER PRIMARY KEY, piece BLOB NOT NULL, score REAL,
 *             special INTEGER NOT NULL)
 *        the vocabulary, one row per id in [0, vocab size); piece is the
 *        token's string as the tokenizer file spells it (GPT-2
 *        byte-to-unicode form or SentencePiece "▁" form), UTF-8; score:
 *        SentencePiece-style score (-rank of the first merge producing the
 *        piece, 0 otherwise); special = 1 for added/special tokens (every
 *        entry of tokenizer.json's added_tokens; for vocab.json + merges.txt
 *        the tokens tokenizer_config.json and special_tokens_map.json name).
 *      merges(rank INTEGER PRIMARY KEY, left BLOB NOT NULL,
 *             right BLOB NOT NULL)   BPE merges in rank order, rank 0 first
 *        (a pair the file lists twice is here twice).
 *      tokens and merges (and meta tokenizer) are filled by inflash-pack
 *        from the client's tokenizer (client/tok.h: tok_piece,
 *        tok_declared_special, tok_merge), so a store holds only a tokenizer
 *        the client can use; only inflash-inspect reads them (counts). The
 *        client builds its tokenizer from tokenizer_files.
 *      tokenizer_files(name TEXT PRIMARY KEY, data BLOB NOT NULL)
 *        the source tokenizer files verbatim ("vocab.json", "merges.txt",
 *        or "tokenizer.json"; also "tokenizer_config.json",
 *        "special_tokens_map.json", "generation_config.json" if present).
 *      tensors(name TEXT PRIMARY KEY, dtype TEXT NOT NULL,
 *              shape TEXT NOT NULL, file TEXT NOT NULL,
 *              offset INTEGER NOT NULL, bytes INTEGER NOT NULL,
 *              xxh64 INTEGER NOT NULL)
 *        every dense tensor under its Hugging Face name; shape is the dims
 *        separated by single spaces, outermost first ("1024 256"); file is
 *        "dense.bin"; xxh64 is XXH64(data, bytes, seed 0) stored as the
 *        signed 64-bit integer with the same bits.
 *      layers(layer INTEGER PRIMARY KEY, offset INTEGER NOT NULL,
 *             bytes INTEGER NOT NULL, n_neurons INTEGER NOT NULL)
 *        where each layer's bundles live in ffn.bin (bytes = n_neurons * B).
 *      neurons(layer INTEGER NOT NULL, id INTEGER NOT NULL,
 *              slot INTEGER NOT NULL, offset INTEGER NOT NULL,
 *              bytes INTEGER NOT NULL, freq REAL, xxh64 INTEGER NOT NULL,
 *              PRIMARY KEY(layer, id))
 *        one row per neuron; offset = layers.offset + slot * bytes; freq is
 *        NULL until calibration; xxh64 as for tensors, over the bundle.
 *
 *      calib(layer INTEGER PRIMARY KEY, rank INTEGER NOT NULL,
 *            threshold REAL NOT NULL, act_threshold REAL NOT NULL,
 *            sparsity REAL, recall REAL, precision REAL,
 *            pred_fraction REAL)
 *        optional, written by inflash-calibrate (all layers or none).
 *        The layer's predictor scores neuron j as
 *          s = B·(A·x) + c   (x: the FFN input after the FFN norm)
 *        and predicts it active iff s[j] > threshold. "Active" means
 *        pre-activation > 0 for ReLU models; a non-zero term for the gated
 *        activations with exact zeros (relu, fatrelu, drelu, cats); for
 *        SwiGLU, meta calib_criterion names the magnitude that must exceed
 *        act_threshold (act_threshold is 0 for the exact ones; the table of
 *        these names and the test itself are layout/activity.h):
 *          "relu:up>0"                              ReLU models
 *          "exact:term!=0"                          gated, exact zeros
 *          "gated:|silu(gate)*up|>act_threshold"    default for gated: the
 *                                                   neuron's contribution
 *          "gated:|silu(gate)|>act_threshold"
 *          "gated:silu(gate)>act_threshold"
 *        sparsity/recall/precision/pred_fraction are the calibration
 *        figures (fractions in [0,1]). The predictor's tensors are in
 *        dense.bin, always f32, named
 *          inflash.pred.<layer>.A  [rank, d_model]
 *          inflash.pred.<layer>.B  [d_ffn, rank]
 *          inflash.pred.<layer>.c  [d_ffn]
 *        (rows of B and c in neuron-id order, whatever the slots).
 *      Calibration also sets meta calib_text_tokens, calib_recall_target,
 *      calib_target_sparsity (SwiGLU), calib_criterion and fills
 *      neurons.freq.
 *
 * 5. A reader trusts nothing: magic and version in meta and in both
 *    headers, every hyperparameter within sane bounds, every tensor's
 *    offset + bytes within its file and equal to the bytes of prod(shape)
 *    values of its dtype (a quantized tensor's innermost dim a multiple
 *    of 32), each tensor's dtype the one fmt_tensor_dtype() gives,
 *    tensors not overlapping, every layer 4096-aligned and inside ffn.bin,
 *    every neuron's slot < n_neurons, slots a permutation, offsets
 *    consistent, and the real file sizes equal to meta dense_bytes /
 *    ffn_bytes. Any mismatch is an error naming the file.
 *
 * 6. A store is written into OUT_DIR.tmp.<pid> beside OUT_DIR and renamed
 *    into place when complete; readers never see a half-written store. An
 *    update (calibration) builds the new store in DIR.tmp.<pid> (unchanged
 *    files hard-linked) and swaps it in with one renameat2(RENAME_EXCHANGE),
 *    so the store at DIR is always either the old one or the new one.
 */
#ifndef INFLASH_FORMAT_H
#define INFLASH_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#define IFL_MAGIC          "INFLASH"        /* 8 bytes with the NUL */
#define IFL_VERSION        2u
#define IFL_HEADER_BYTES   4096u
#define IFL_TENSOR_ALIGN   64u
#define IFL_LAYER_ALIGN    4096u
#define IFL_KIND_DENSE     1u
#define IFL_KIND_FFN       2u

#define IFL_INDEX_NAME     "index.sqlite"
#define IFL_DENSE_NAME     "dense.bin"
#define IFL_FFN_NAME       "ffn.bin"

/* Element types (section 1). A store holds F32, F16, Q8_0 or Q4_0; BF16
 * appears only in sources. */
typedef enum { FMT_F32 = 0, FMT_F16 = 1, FMT_BF16 = 2, FMT_Q8_0 = 3, FMT_Q4_0 = 4 } fmt_dtype;
#define FMT_NDTYPES 5

#define FMT_QK           32u   /* values per block of q8_0 and q4_0 */
#define FMT_Q8_0_BYTES   34u   /* f16 scale + 32 int8 */
#define FMT_Q4_0_BYTES   18u   /* f16 scale + 16 bytes of nibbles */

/* "f32"/"f16"/"bf16"/"q8_0"/"q4_0" (any case, also "F32", "float16"...):
 * 0 and *out, or -1. */
int fmt_dtype_parse(const char *name, fmt_dtype *out);
/* "f32" | "f16" | "bf16" | "q8_0" | "q4_0" */
const char *fmt_dtype_name(fmt_dtype t);
/* 1 for a store dtype (f32, f16, q8_0, q4_0), 0 for bf16 */
int fmt_is_store_dtype(fmt_dtype t);
/* 1 for q8_0 / q4_0 */
static inline int fmt_is_quant(fmt_dtype t) { return t == FMT_Q8_0 || t == FMT_Q4_0; }
/* values per block: 1, or FMT_QK for the quantized dtypes */
static inline uint64_t fmt_block_values(fmt_dtype t) { return fmt_is_quant(t) ? FMT_QK : 1; }
/* bytes per block: 4, 2, 2, 34, 18 */
uint64_t fmt_block_bytes(fmt_dtype t);
/* Bytes of n values of type t. n must be a whole number of blocks; if it
 * is not (or the product overflows) the answer is UINT64_MAX, which no
 * real size equals, so a size check against it fails. */
uint64_t fmt_bytes(fmt_dtype t, uint64_t n);
/* Average bits per weight: 32, 16, 16, 8.5, 4.5. */
double fmt_bits_per_value(fmt_dtype t);
/* The dtype of a dense tensor in a store of dtype `store` (section 1):
 * predictors (names "inflash.pred.*") f32; in a quantized store 1-D
 * tensors f32; otherwise the store dtype. */
fmt_dtype fmt_tensor_dtype(fmt_dtype store, const char *name, int ndim);

/* The 32-byte header of dense.bin / ffn.bin (section 2), decoded. */
typedef struct {
    uint32_t version;
    uint32_t kind;
    uint64_t file_bytes;
    uint64_t count;
} fmt_header;

/* Encode into buf[IFL_HEADER_BYTES] (zero-filled beyond the fields). */
void fmt_header_encode(const fmt_header *h, unsigned char *buf);
/* Decode and check the magic; 0 or -1 (bad magic). Version not checked. */
int fmt_header_decode(const unsigned char *buf, size_t len, fmt_header *h);

/* Little-endian field access, alignment-free. */
static inline uint32_t fmt_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t fmt_le64(const unsigned char *p)
{
    return (uint64_t)fmt_le32(p) | (uint64_t)fmt_le32(p + 4) << 32;
}
static inline void fmt_put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
}
static inline void fmt_put_le64(unsigned char *p, uint64_t v)
{
    fmt_put_le32(p, (uint32_t)v);
    fmt_put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint64_t fmt_align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

/* Convert n values of type t at src (little-endian bytes) to f32 (for a
 * quantized t, n a multiple of FMT_QK: dequantization). */
void fmt_to_f32(fmt_dtype t, const void *src, float *dst, size_t n);
/* Convert n f32 values to type t: F32, F16 and BF16 round to nearest even;
 * Q8_0 and Q4_0 (n a multiple of FMT_QK) quantize with ggml's reference
 * rounding (section 1, layout/quant.c). */
void fmt_from_f32(fmt_dtype t, const float *src, void *dst, size_t n);
/* Scalar conversions. */
float    fmt_f16_to_f32(uint16_t h);
uint16_t fmt_f32_to_f16(float f);
float    fmt_bf16_to_f32(uint16_t h);
/* Exact conversion of BF16 to F16 bits is not generally possible; sources
 * in BF16 go through f32. */

#endif
