/* keras_lowprec C runtime: see klp.h for the contract. */
#include "klp.h"

/* The requantization relies on >> of a negative int32 being an arithmetic (floor) shift, as
 * in GCC, Clang, Arm Compiler and IAR (C99 leaves it implementation-defined). */
#if ((-1) >> 1) != -1
#error "klp.c needs an arithmetic right shift of negative integers"
#endif

static int32_t clamp32(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* Index of a pre-activation (already in the table's fixed-point format) into a LUT. */
static uint32_t lut_index(int32_t pre) { return (uint32_t)(clamp32(pre, -256, 255) + 256); }

/* -- matrix-vector products (additions, table lookups and doubling only) -------------------- */

/* Tables of all signed sums of one group of `g` inputs: entry sum_k d_k 3^k (digits d_k in
 * 0..2) holds sum_k (d_k - 1) x_k. Built by additions only, input by input from the last:
 * the n entries so far (over inputs k+1..g-1) become 3n, entry 3m + d = entry m + (d - 1) x_k,
 * expanded in place from the end so that every write is sequential (immediate offsets on
 * Thumb-1) and lands on an entry already read. Inputs from `valid` on count as 0 (padding). */
static void trit_table(int16_t* t, const int8_t* x, int32_t valid, uint32_t g) {
  uint32_t n = 1;
  t[0] = 0;
  for (uint32_t k = g; k-- > 0;) {
    const int16_t v = (int16_t)((int32_t)k < valid ? x[k] : 0);
    const int16_t* r = t + n;
    int16_t* w = t + n + n + n;
    while (r != t) {
      const int16_t a = *--r;
      w -= 3;
      w[0] = (int16_t)(a - v);
      w[1] = a;
      w[2] = (int16_t)(a + v);
    }
    n = n + n + n;
  }
}

/* 2-bit codes carry their group's position: group b holds code + 81 (b mod 3), which still
 * fits a byte, so three consecutive groups index one pointer into their three tables and the
 * loop adds nothing but the entries (no per-group table-pointer add). Blocks start at
 * multiples of 3 groups (model.py), so b mod 3 is the same within a block and in the column. */
static void trit4_lookups(const uint8_t* codes, uint32_t stride, uint32_t n, uint32_t nb, int accumulate,
                          int32_t* acc, const int16_t* table) {
  for (uint32_t j = 0; j < n; j++) {
    int32_t s = accumulate ? acc[j] : 0;
    const int16_t* tp = table;
    const uint8_t* c = codes;
    uint32_t b = nb;
    for (; b >= 3u; b -= 3u, c += 3, tp += 243) s += tp[c[0]] + tp[c[1]] + tp[c[2]];
    if (b > 0u) s += tp[c[0]];
    if (b > 1u) s += tp[c[1]];
    acc[j] = s;
    codes += stride;
  }
}

void klp_matvec_trit(const uint8_t* codes, uint32_t stride, uint32_t n, const int8_t* x, int32_t valid,
                     uint32_t nb, uint32_t g, int accumulate, int32_t* acc, int16_t* table) {
  const uint32_t tsize = g == 5u ? 243u : 81u;
  int16_t* t = table;
  for (uint32_t b = 0; b < nb; b++) {
    trit_table(t, x, valid, g);
    t += tsize;
    x += g;
    valid -= (int32_t)g;
  }
  if (g == 4u) {
    trit4_lookups(codes, stride, n, nb, accumulate, acc, table);
    return;
  }
  for (uint32_t j = 0; j < n; j++) {
    int32_t s = accumulate ? acc[j] : 0;
    const int16_t* tp = table;
    for (uint32_t b = 0; b < nb; b++) {
      s += tp[codes[b]];
      tp += tsize;
    }
    acc[j] = s;
    codes += stride;
  }
}

/* Per input, 16 entries: code 0 and 8 are 0, code 1..7 is x << (code - 1), 9..15 its
 * negation (the shift made by doubling, which is defined for negative x too). */
static void shift_table(int16_t* t, int16_t v) {
  t[0] = 0;
  t[8] = 0;
  for (uint32_t c = 1; c < 8; c++) {
    t[c] = v;
    t[c + 8] = (int16_t)-v;
    v = (int16_t)(v + v);
  }
}

void klp_matvec_shift(const uint8_t* codes, uint32_t stride, uint32_t n, const int8_t* x, int32_t valid,
                      uint32_t nb, int accumulate, int32_t* acc, int16_t* table) {
  int16_t* t = table;
  for (uint32_t b = 0; b < nb; b++) {
    shift_table(t, (int16_t)(valid > 0 ? x[0] : 0));
    shift_table(t + 16, (int16_t)(valid > 1 ? x[1] : 0));
    t += 32;
    x += 2;
    valid -= 2;
  }
  for (uint32_t j = 0; j < n; j++) {
    int32_t s = accumulate ? acc[j] : 0;
    const int16_t* tp = table;
    for (uint32_t b = 0; b < nb; b++) {
      const uint32_t c = codes[b];
      s += tp[c & 15u] + tp[16u + (c >> 4)];
      tp += 32;
    }
    acc[j] = s;
    codes += stride;
  }
}

/* Float layers only (int8 weights): the classic multiply-accumulate. */
void klp_matvec_int8(const uint8_t* codes, uint32_t stride, uint32_t n, const int8_t* x, uint32_t rows,
                     int32_t* acc) {
  const int8_t* col = (const int8_t*)codes;
  for (uint32_t j = 0; j < n; j++, col += stride) {
    int32_t s = 0;
    for (uint32_t i = 0; i < rows; i++) s += (int32_t)col[i] * x[i];
    acc[j] = s;
  }
}

/* acc[j] = sum_i W[i][j] x[i] for the n columns from `codes`: the kernels above, one block of
 * m->block groups at a time (tables for the block's inputs, then every column's lookups). */
static void matvec(const klp_matrix* m, const uint8_t* codes, uint16_t n, const int8_t* x, int32_t* acc,
                   int16_t* table) {
  if (m->packing == KLP_INT8) {
    klp_matvec_int8(codes, m->stride, n, x, m->rows, acc);
    return;
  }
  const uint32_t g = m->packing == KLP_SHIFT4 ? 2u : (m->packing == KLP_TRIT5 ? 5u : 4u);
  int32_t first = 0;
  for (uint32_t g0 = 0; g0 < m->stride; g0 += m->block) {
    const uint32_t nb = m->stride - g0 < m->block ? m->stride - g0 : m->block;
    if (m->packing == KLP_SHIFT4) {
      klp_matvec_shift(codes + g0, m->stride, n, x + first, m->rows - first, nb, g0 != 0, acc, table);
    } else {
      klp_matvec_trit(codes + g0, m->stride, n, x + first, m->rows - first, nb, g, g0 != 0, acc, table);
    }
    for (uint32_t b = 0; b < nb; b++) first += (int32_t)g;
  }
}

/* -- layers ------------------------------------------------------------------------------------ */

typedef struct {
  int32_t* ax;
  int32_t* ah;
  int16_t* table;
  uint8_t* buf0;
  uint8_t* buf1;
} scratch_t;

/* Index of the multipliers of output column j of gate g: per column or per gate. */
static uint32_t mi(const klp_layer* l, uint32_t g, uint32_t j) { return l->mult_per_column ? j : g; }

/* (ax * mx + ah * mh + bias) >> shift for output column j of gate g. */
static int32_t pre(const klp_layer* l, const scratch_t* s, uint32_t g, uint32_t j) {
  return (s->ax[j] * l->mult_x[mi(l, g, j)] + s->ah[j] * l->mult_h[mi(l, g, j)] + l->bias[j]) >> l->shift[g];
}

static void simple_rnn(const klp_model* md, const klp_layer* l, const scratch_t* s, int8_t* h) {
  for (uint32_t j = 0; j < l->units; j++) h[j] = md->tanh[lut_index(pre(l, s, 0, j))];
}

/* c' = f c + i g (Q8 * Q11 and Q8 * Q7 << 4, both Q19, rounded to Q11); h' = o tanh(c'). */
static void lstm(const klp_model* md, const klp_layer* l, const scratch_t* s, int8_t* h, int16_t* c) {
  const uint32_t u = l->units;
  for (uint32_t j = 0; j < u; j++) {
    const int32_t i = md->sigmoid[lut_index(pre(l, s, 0, j))];
    const int32_t f = md->sigmoid[lut_index(pre(l, s, 1, u + j))];
    const int32_t g = md->tanh[lut_index(pre(l, s, 2, 2 * u + j))];
    const int32_t o = md->sigmoid[lut_index(pre(l, s, 3, 3 * u + j))];
    const int32_t cn = clamp32((f * c[j] + i * g * 16 + 128) >> 8, -32768, 32767);
    const int32_t t = md->tanh[lut_index((cn + 16) >> 5)];
    c[j] = (int16_t)cn;
    h[j] = (int8_t)clamp32((o * t + 128) >> 8, -128, 127);
  }
}

/* h' = z h + (1 - z) hh, z in Q8. */
static int8_t gru_mix(int32_t z, int32_t h, int32_t hh) {
  return (int8_t)clamp32((z * h + (256 - z) * hh + 128) >> 8, -128, 127);
}

/* reset_after=True: hh = tanh(x Wh + bh + r (h Uh + rbh)). */
static void gru(const klp_model* md, const klp_layer* l, const scratch_t* s, int8_t* h) {
  const uint32_t u = l->units;
  for (uint32_t j = 0; j < u; j++) {
    const int32_t z = md->sigmoid[lut_index(pre(l, s, 0, j))];
    const int32_t r = md->sigmoid[lut_index(pre(l, s, 1, u + j))];
    const uint32_t k = 2 * u + j;
    const int32_t px = (s->ax[k] * l->mult_x[mi(l, 2, k)] + l->bias[k]) >> l->shift[2];
    const int32_t ph = (s->ah[k] * l->mult_h[mi(l, 2, k)] + l->bias_h[j]) >> l->shift[2];
    const int32_t hh = md->tanh[lut_index(px + ((r * ph + 128) >> 8))];
    h[j] = gru_mix(z, h[j], hh);
  }
}

/* reset_after=False: hh = tanh(x Wh + bh + (r h) Uh): the candidate's recurrent product
 * runs on r h, after z and r are known. */
static void gru_reset_before(const klp_model* md, const klp_layer* l, const scratch_t* s, int8_t* h) {
  const uint32_t u = l->units;
  uint8_t* z = s->buf0;
  int8_t* rh = (int8_t*)s->buf1;
  for (uint32_t j = 0; j < u; j++) {
    z[j] = md->sigmoid[lut_index(pre(l, s, 0, j))];
    const int32_t r = md->sigmoid[lut_index(pre(l, s, 1, u + j))];
    rh[j] = (int8_t)clamp32((r * h[j] + 128) >> 8, -128, 127);
  }
  matvec(&l->u, l->u.codes + l->u_hgate, l->units, rh, s->ah + 2 * u, s->table);
  for (uint32_t j = 0; j < u; j++) {
    const int32_t hh = md->tanh[lut_index(pre(l, s, 2, 2 * u + j))];
    h[j] = gru_mix(z[j], h[j], hh);
  }
}

static void rnn_layer(const klp_model* md, const klp_layer* l, const scratch_t* s, uint8_t* state,
                      const int8_t* x) {
  int8_t* h = (int8_t*)(state + l->state_h);
  matvec(&l->w, l->w.codes, l->w.cols, x, s->ax, s->table);
  /* reset_after=False: the candidate's recurrent product waits for r (gru_reset_before). */
  const uint16_t nh = l->type == KLP_GRU_RESET_BEFORE ? (uint16_t)(2 * l->units) : l->u.cols;
  matvec(&l->u, l->u.codes, nh, h, s->ah, s->table);
  if (l->type == KLP_LSTM) {
    lstm(md, l, s, h, (int16_t*)(void*)(state + l->state_c));
  } else if (l->type == KLP_GRU) {
    gru(md, l, s, h);
  } else if (l->type == KLP_GRU_RESET_BEFORE) {
    gru_reset_before(md, l, s, h);
  } else {
    simple_rnn(md, l, s, h);
  }
}

static void dense_layer(const klp_layer* l, const scratch_t* s, const int8_t* x, int8_t* y) {
  const int32_t lo = l->act == KLP_RELU ? l->out_zp : -128;
  matvec(&l->w, l->w.codes, l->w.cols, x, s->ax, s->table);
  for (uint32_t j = 0; j < l->w.cols; j++) {
    y[j] = (int8_t)clamp32(((s->ax[j] * l->mult_x[mi(l, 0, j)] + l->bias[j]) >> l->shift[0]) + l->out_zp, lo, 127);
  }
}

/* -- API ----------------------------------------------------------------------------------------- */

int klp_init(klp_ctx* ctx, const klp_model* model, void* state, size_t state_bytes, void* scratch,
             size_t scratch_bytes) {
  if (state_bytes < model->state_bytes) return KLP_ERR_STATE;
  if (scratch_bytes < model->scratch_bytes) return KLP_ERR_SCRATCH;
  if (((uintptr_t)state & 3u) != 0 || ((uintptr_t)scratch & 3u) != 0) return KLP_ERR_ALIGN;
  ctx->model = model;
  ctx->state = (uint8_t*)state;
  ctx->scratch = (uint8_t*)scratch;
  klp_reset(ctx);
  return KLP_OK;
}

void klp_reset(klp_ctx* ctx) {
  for (uint32_t i = 0; i < ctx->model->state_bytes; i++) ctx->state[i] = 0;
}

void klp_step(klp_ctx* ctx, const int8_t* x, int8_t* out) {
  const klp_model* md = ctx->model;
  scratch_t s;
  s.ax = (int32_t*)(void*)ctx->scratch;
  s.ah = (int32_t*)(void*)(ctx->scratch + md->acc_h_offset);
  s.table = (int16_t*)(void*)(ctx->scratch + md->table_offset);
  s.buf0 = ctx->scratch + md->buf_offset;
  s.buf1 = s.buf0 + md->buf_bytes;
  const int8_t* in = x;
  uint32_t k = 0;
  for (; k < md->n_layers && md->layers[k].type != KLP_DENSE; k++) {
    rnn_layer(md, &md->layers[k], &s, ctx->state, in);
    in = (const int8_t*)(ctx->state + md->layers[k].state_h);
  }
  if (out == NULL) return;
  if (k == md->n_layers) { /* no head: the output is the last hidden state */
    for (uint32_t j = 0; j < md->output_size; j++) out[j] = in[j];
    return;
  }
  /* The head: dense layers ping-pong between the two buffers, the last writes out. */
  for (uint8_t* y = s.buf0; k < md->n_layers; k++, y = y == s.buf0 ? s.buf1 : s.buf0) {
    int8_t* dst = k + 1 == md->n_layers ? out : (int8_t*)y;
    dense_layer(&md->layers[k], &s, in, dst);
    in = dst;
  }
}
