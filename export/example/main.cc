// Minimal TFLM program for a model exported with keras_lowprec.export, using only TFLM's
// public API: tflite::GetModel, MicroMutableOpResolver, MicroInterpreter. Build it next to
// the generated model_data.cc / model_data.h / model_ops.h, with TFLM compiled with
// -DTF_LITE_STATIC_MEMORY like this file (export/README.md gives the commands; the test
// suite builds it with -Wall -Wextra -Werror through the firmware harness).
//
// Define KERAS_LOWPREC_STREAM when the model was exported with mode="stream".

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "model_data.h"
#include "model_ops.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"

#ifndef TF_LITE_STATIC_MEMORY
#error "Build with -DTF_LITE_STATIC_MEMORY, like the TFLM library (it changes TfLiteTensor's layout)."
#endif

namespace {

alignas(16) uint8_t tensor_arena[kTensorArenaSize];
int8_t result[256];  // output 0 (at most 256 values in this example)

int8_t Quantize(float x) {
  int32_t q = static_cast<int32_t>(std::lroundf(x / kInputScale)) + kInputZeroPoint;
  if (q < -128) q = -128;
  if (q > 127) q = 127;
  return static_cast<int8_t>(q);
}

float Dequantize(int8_t q) { return (static_cast<int32_t>(q) - kOutputZeroPoint) * kOutputScale; }

}  // namespace

int main() {
  const tflite::Model* model = tflite::GetModel(g_model_data);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    std::printf("schema version mismatch\n");
    return 1;
  }
  ModelOpResolver resolver;
  if (RegisterModelOps(resolver) != kTfLiteOk) return 1;
  tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, kTensorArenaSize);
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    std::printf("AllocateTensors failed: increase kTensorArenaSize\n");
    return 1;
  }
  std::printf("arena used: %u bytes\n", static_cast<unsigned>(interpreter.arena_used_bytes()));
  if (interpreter.output(0)->bytes > sizeof(result)) {
    std::printf("output 0 has more than %u values: enlarge result[]\n", static_cast<unsigned>(sizeof(result)));
    return 1;
  }

  // A made-up input sequence; replace with your features (same scaling as in training).
  static float features[kModelTimesteps > 0 ? kModelTimesteps : 16][kModelFeatures];
  const int steps = kModelTimesteps > 0 ? kModelTimesteps : 16;
  for (int t = 0; t < steps; ++t)
    for (int f = 0; f < kModelFeatures; ++f) features[t][f] = 0.1f * ((t + f) % 5 - 2);

  // A new sequence starts from zero state. LSTM models (fused LSTM op) keep their h and c in
  // variable tensors that TFLM carries from one invoke to the next (kStateInVariables):
  // Reset() zeroes them. For the other models Reset() is harmless.
  if (interpreter.Reset() != kTfLiteOk) return 1;

#ifndef KERAS_LOWPREC_STREAM
  // Sequence mode: the whole sequence in one invoke.
  TfLiteTensor* input = interpreter.input(0);
  for (int t = 0; t < steps; ++t)
    for (int f = 0; f < kModelFeatures; ++f) input->data.int8[t * kModelFeatures + f] = Quantize(features[t][f]);
  if (interpreter.Invoke() != kTfLiteOk) return 1;
  std::memcpy(result, interpreter.output(0)->data.int8, interpreter.output(0)->bytes);
#else
  // Stream mode: one step per invoke. Fused LSTM: the state stays in the op's variable
  // tensors (kNumStates == 0). Otherwise inputs 1..kNumStates are the recurrent states,
  // outputs 1..kNumStates the new states, with identical int8 quantization: copy the bytes;
  // at the start of every sequence set each state to its zero point (= the float value 0).
  for (int s = 1; s <= kNumStates; ++s) {
    TfLiteTensor* state = interpreter.input(s);
    std::memset(state->data.int8, static_cast<int8_t>(state->params.zero_point), state->bytes);
  }
  static int8_t states[kStateBytes > 0 ? kStateBytes : 1];
  for (int t = 0; t < steps; ++t) {
    TfLiteTensor* input = interpreter.input(0);
    for (int f = 0; f < kModelFeatures; ++f) input->data.int8[f] = Quantize(features[t][f]);
    if (interpreter.Invoke() != kTfLiteOk) return 1;
    // TFLM may place a graph output at an input's arena bytes: keep output 0 and set every
    // state output aside before writing any input.
    std::memcpy(result, interpreter.output(0)->data.int8, interpreter.output(0)->bytes);
    int offset = 0;
    for (int s = 1; s <= kNumStates; ++s) {
      std::memcpy(states + offset, interpreter.output(s)->data.int8, interpreter.output(s)->bytes);
      offset += static_cast<int>(interpreter.output(s)->bytes);
    }
    offset = 0;
    for (int s = 1; s <= kNumStates; ++s) {
      std::memcpy(interpreter.input(s)->data.int8, states + offset, interpreter.input(s)->bytes);
      offset += static_cast<int>(interpreter.input(s)->bytes);
    }
  }
#endif

  const int outputs = static_cast<int>(interpreter.output(0)->bytes);
  int best = 0;
  for (int i = 0; i < outputs; ++i) {
    std::printf("output[%d] = %f\n", i, static_cast<double>(Dequantize(result[i])));
    if (result[i] > result[best]) best = i;
  }
  std::printf("class %d\n", best);
  return 0;
}
