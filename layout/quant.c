/* quant.c: the q8_0 / q4_0 block codecs (quant.h). The rounding is ggml's
 * reference rounding (format.h section 1), so a store's blocks equal the
 * blocks llama.cpp would write for the same rows. */
#include "quant.h"

#include <math.h>

#include "format.h"

float quant_scale(const void *block)
{
    const unsigned char *p = block;
    return fmt_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
}

static void put_scale(unsigned char *p, float d)
{
    uint16_t h = fmt_f32_to_f16(d);
    p[0] = (unsigned char)h;
    p[1] = (unsigned char)(h >> 8);
}

/* 1/d as ggml's reference takes it (0 for d = 0), and also 0 where 1/d
 * overflows (a block of magnitudes below ~3.7e-37, all denormal): ggml's
 * formula would convert inf to int8 there, which C leaves undefined; the
 * stored f16 scale of such a block is 0, so its values decode to 0 either
 * way. */
static float inverse(float d)
{
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    return isfinite(id) ? id : 0.0f;
}

void quant_q8_0(const float *x, void *dst, size_t n)
{
    unsigned char *b = dst;
    for (size_t i = 0; i < n; i += FMT_QK, x += FMT_QK, b += FMT_Q8_0_BYTES) {
        float amax = 0.0f;
        for (unsigned j = 0; j < FMT_QK; j++) {
            float a = fabsf(x[j]);
            if (a > amax)
                amax = a;
        }
        float d = amax / 127.0f;
        float id = inverse(d);
        put_scale(b, d);
        for (unsigned j = 0; j < FMT_QK; j++)
            b[2 + j] = (unsigned char)(int8_t)roundf(x[j] * id);
    }
}

void quant_q4_0(const float *x, void *dst, size_t n)
{
    unsigned char *b = dst;
    for (size_t i = 0; i < n; i += FMT_QK, x += FMT_QK, b += FMT_Q4_0_BYTES) {
        float amax = 0.0f, max = 0.0f;       /* the first value of largest magnitude */
        for (unsigned j = 0; j < FMT_QK; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        float d = max / -8.0f;
        float id = inverse(d);
        put_scale(b, d);
        for (unsigned j = 0; j < FMT_QK / 2; j++) {
            int lo = (int8_t)(x[j] * id + 8.5f), hi = (int8_t)(x[j + FMT_QK / 2] * id + 8.5f);
            lo = lo < 15 ? lo : 15;
            hi = hi < 15 ? hi : 15;
            b[2 + j] = (unsigned char)((unsigned)lo | (unsigned)hi << 4);
        }
    }
}

void dequant_q8_0(const void *src, float *y, size_t n)
{
    const unsigned char *b = src;
    for (size_t i = 0; i < n; i += FMT_QK, y += FMT_QK, b += FMT_Q8_0_BYTES) {
        float d = quant_scale(b);
        for (unsigned j = 0; j < FMT_QK; j++)
            y[j] = (float)(int8_t)b[2 + j] * d;
    }
}

void dequant_q4_0(const void *src, float *y, size_t n)
{
    const unsigned char *b = src;
    for (size_t i = 0; i < n; i += FMT_QK, y += FMT_QK, b += FMT_Q4_0_BYTES) {
        float d = quant_scale(b);
        for (unsigned j = 0; j < FMT_QK / 2; j++) {
            y[j] = (float)((int)(b[2 + j] & 0x0f) - 8) * d;
            y[j + FMT_QK / 2] = (float)((int)(b[2 + j] >> 4) - 8) * d;
        }
    }
}
