/* Test program of the C runtime: runs the test vectors of klp_test_data.h (written by
 * keras_lowprec.export.to_c with verify_data) and compares every output byte and the final
 * state with the NumPy reference. On Cortex-M (KLP_SYSTICK) SysTick counts the processor
 * clock around the steps of each sequence; under QEMU -icount shift=0 ticks times the tick
 * period in ns is an instruction count. Prints one "summary" line; exit status 1 on a mismatch. */
#include <stdio.h>

#include "klp.h"
#include "klp_test_data.h"

#if defined(KLP_SYSTICK)
static volatile uint32_t* const kSysTick = (volatile uint32_t*)0xE000E010u;
static void start_ticks(void) {
  kSysTick[1] = 0xFFFFFFu; /* reload */
  kSysTick[2] = 0;         /* current value */
  kSysTick[0] = 5u;        /* enable, processor clock, no interrupt */
}
static uint32_t ticks(void) { return kSysTick[2]; }
#else
static void start_ticks(void) {}
static uint32_t ticks(void) { return 0; }
#endif

/* Stack use of the runtime's calls: words below main's frame are painted before the runs and
 * the deepest overwritten one is found after them (bare metal, no interrupts enabled). */
#if defined(KLP_SYSTICK)
#define PAINT_WORDS 1024u
#define PAINT_GAP 32u /* words left for main's own frame below the mark */
static volatile uint32_t* paint_top;
static void paint_stack(void) {
  volatile uint32_t here = 0;
  paint_top = (volatile uint32_t*)(((uintptr_t)&here - 4u * PAINT_GAP) & ~(uintptr_t)3u);
  for (uint32_t i = 0; i < PAINT_WORDS; i++) paint_top[-(int32_t)i] = 0xA5A5A5A5u;
}
static unsigned long stack_bytes(void) {
  uint32_t i = PAINT_WORDS;
  while (i > 0 && paint_top[-(int32_t)(i - 1)] == 0xA5A5A5A5u) i--;
  return 4ul * (i + PAINT_GAP);
}
#endif

/* SysTick counts down over 24 bits. */
static uint32_t elapsed(uint32_t start, uint32_t end) { return (start - end) & 0xFFFFFFu; }

static uint32_t state_mem[(KLP_TEST_STATE_BYTES + 3) / 4];
static uint32_t scratch_mem[(KLP_TEST_SCRATCH_BYTES + 3) / 4];
static int8_t outputs[KLP_TEST_STEPS][KLP_TEST_OUTPUTS];

int main(void) {
  klp_ctx ctx;
#if defined(KLP_SYSTICK)
  paint_stack();
#endif
  const int rc = klp_init(&ctx, &KLP_TEST_MODEL, state_mem, sizeof state_mem, scratch_mem, sizeof scratch_mem);
  if (rc != KLP_OK) {
    printf("error klp_init %d\n", rc);
    return 2;
  }
  long mismatches = 0, state_mismatches = 0;
  int max_diff = 0;
  unsigned long total_ticks = 0;
  start_ticks();
  for (int n = 0; n < KLP_TEST_SEQUENCES; n++) {
    klp_reset(&ctx);
    const uint32_t t0 = ticks();
    for (int t = 0; t < KLP_TEST_STEPS; t++) {
      klp_step(&ctx, &klp_test_input[(n * KLP_TEST_STEPS + t) * KLP_TEST_INPUTS], outputs[t]);
    }
    total_ticks += elapsed(t0, ticks());
    for (int t = 0; t < KLP_TEST_STEPS; t++) {
      for (int j = 0; j < KLP_TEST_OUTPUTS; j++) {
        const int d = outputs[t][j] - klp_test_expected[(n * KLP_TEST_STEPS + t) * KLP_TEST_OUTPUTS + j];
        const int a = d < 0 ? -d : d;
        if (a != 0 && mismatches++ == 0) printf("first mismatch: sequence %d step %d output %d diff %d\n", n, t, j, d);
        if (a > max_diff) max_diff = a;
      }
    }
    for (uint32_t i = 0; i < KLP_TEST_MODEL.state_bytes; i++) {
      if (((const uint8_t*)state_mem)[i] != klp_test_state[n * KLP_TEST_MODEL.state_bytes + i]) state_mismatches++;
    }
  }
#if defined(KLP_SYSTICK)
  const unsigned long stack = stack_bytes();
#else
  const unsigned long stack = 0;
#endif
  printf("stack_bytes %lu\n", stack);
  printf("summary sequences %d steps %d outputs %ld mismatches %ld max_abs_diff %d state_mismatches %ld ticks %lu\n",
         KLP_TEST_SEQUENCES, KLP_TEST_STEPS, (long)KLP_TEST_SEQUENCES * KLP_TEST_STEPS * KLP_TEST_OUTPUTS,
         mismatches, max_diff, state_mismatches, total_ticks);
  return mismatches != 0 || state_mismatches != 0;
}
