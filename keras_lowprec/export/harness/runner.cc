// Test program of the firmware harness: runs an exported model on the test vectors the
// exporter wrote (model_test_data.h: int8 inputs and the int8 outputs of TFLM's Python
// interpreter) with the header's own kTensorArenaSize, and prints one line per sequence and
// a summary the Python side parses. Exit status 0: every output byte matched.
//
// On the Cortex-M targets SysTick counts the processor clock; under QEMU with
// `-icount shift=0` one instruction is one nanosecond of virtual time, so the tick count
// times kTickNs is an instruction count (not a cycle count).

#include <cstdint>
#include <cstdio>
#include <cstring>

#include "model_data.h"
#include "model_ops.h"
#include "model_test_data.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"

#ifndef TF_LITE_STATIC_MEMORY
#error "Build with -DTF_LITE_STATIC_MEMORY, like the TFLM library (it changes TfLiteTensor's layout)."
#endif

namespace {

alignas(16) uint8_t tensor_arena[kTensorArenaSize];

#if defined(KERAS_LOWPREC_QEMU_MPS2)
// SysTick on the processor clock: 25 MHz on mps2-an386, i.e. 40 ns per tick.
constexpr uint32_t kTickNs = 40;
volatile uint32_t* const kSysTick = reinterpret_cast<volatile uint32_t*>(0xE000E010u);
void StartTicks() {
  kSysTick[1] = 0xFFFFFFu;  // reload
  kSysTick[2] = 0;          // current value
  kSysTick[0] = 5u;         // enable, processor clock, no interrupt
}
uint32_t Ticks() { return kSysTick[2]; }
uint32_t Elapsed(uint32_t start, uint32_t end) { return (start - end) & 0xFFFFFFu; }  // counts down
#else
constexpr uint32_t kTickNs = 0;
void StartTicks() {}
uint32_t Ticks() { return 0; }
uint32_t Elapsed(uint32_t, uint32_t) { return 0; }
#endif

// Copies state outputs 1..kNumStates into state inputs 1..kNumStates through a buffer.
void CopyStates(tflite::MicroInterpreter& interpreter) {
  static int8_t states[kStateBytes > 0 ? kStateBytes : 1];
  int offset = 0;
  for (int s = 1; s <= kNumStates; ++s) {
    const TfLiteTensor* out = interpreter.output(s);
    std::memcpy(states + offset, out->data.int8, out->bytes);
    offset += static_cast<int>(out->bytes);
  }
  offset = 0;
  for (int s = 1; s <= kNumStates; ++s) {
    TfLiteTensor* in = interpreter.input(s);
    std::memcpy(in->data.int8, states + offset, in->bytes);
    offset += static_cast<int>(in->bytes);
  }
}

}  // namespace

int main() {
  const tflite::Model* model = tflite::GetModel(g_model_data);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    std::printf("error schema version %u, expected %d\n", static_cast<unsigned>(model->version()),
                TFLITE_SCHEMA_VERSION);
    return 2;
  }
  static ModelOpResolver resolver;
  if (RegisterModelOps(resolver) != kTfLiteOk) {
    std::printf("error RegisterModelOps failed\n");
    return 2;
  }
  static tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, kTensorArenaSize);
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    std::printf("error AllocateTensors failed with kTensorArenaSize = %d\n", kTensorArenaSize);
    return 2;
  }
  std::printf("arena_used_bytes %u\n", static_cast<unsigned>(interpreter.arena_used_bytes()));
  StartTicks();

  const int in_size = static_cast<int>(interpreter.input(0)->bytes);
  const int step_size = kModelTimesteps > 0 ? kModelFeatures * kModelTimesteps : kModelFeatures;
  if (in_size != step_size || static_cast<int>(interpreter.output(0)->bytes) != kTestOutputSize) {
    std::printf("error tensor sizes: input %d (expected %d), output %u (expected %d)\n", in_size, step_size,
                static_cast<unsigned>(interpreter.output(0)->bytes), kTestOutputSize);
    return 2;
  }
  long mismatches = 0;
  int max_diff = 0;
  uint64_t ticks = 0;
  long invokes = 0;
  static int8_t y[kTestOutputSize];
  for (int n = 0; n < kTestSequences; ++n) {
    if (interpreter.Reset() != kTfLiteOk) return 2;
    for (int s = 1; s <= kNumStates; ++s) {
      TfLiteTensor* state = interpreter.input(s);
      std::memset(state->data.int8, static_cast<int8_t>(state->params.zero_point), state->bytes);
    }
    const int8_t* x = &kTestInput[n * kTestMaxSteps * kModelFeatures];
    const int invokes_here = kModelTimesteps > 0 ? 1 : kTestSteps[n];
    for (int t = 0; t < invokes_here; ++t) {
      std::memcpy(interpreter.input(0)->data.int8, x + t * kModelFeatures, static_cast<size_t>(in_size));
      const uint32_t start = Ticks();
      const TfLiteStatus status = interpreter.Invoke();
      ticks += Elapsed(start, Ticks());
      ++invokes;
      if (status != kTfLiteOk) {
        std::printf("error Invoke failed at sequence %d step %d\n", n, t);
        return 2;
      }
      // TFLM may place a graph output at an input's arena bytes: take output 0 and every state
      // output aside before writing any input.
      std::memcpy(y, interpreter.output(0)->data.int8, kTestOutputSize);
      CopyStates(interpreter);
    }
    const int8_t* expected = &kTestExpected[n * kTestOutputSize];
    int wrong = 0;
    for (int i = 0; i < kTestOutputSize; ++i) {
      const int diff = y[i] > expected[i] ? y[i] - expected[i] : expected[i] - y[i];
      if (diff != 0) ++wrong;
      if (diff > max_diff) max_diff = diff;
    }
    mismatches += wrong;
    std::printf("sequence %d steps %d mismatches %d\n", n, kTestSteps[n], wrong);
  }
  std::printf("summary sequences %d outputs %d mismatches %ld max_abs_diff %d invokes %ld ticks %llu tick_ns %u\n",
              kTestSequences, kTestSequences * kTestOutputSize, mismatches, max_diff, invokes,
              static_cast<unsigned long long>(ticks), static_cast<unsigned>(kTickNs));
  return mismatches == 0 ? 0 : 1;
}
