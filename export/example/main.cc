// Minimal TFLM host program for a model exported with keras_lowprec.export.
//
// NOT TESTED: no test in this repository compiles this file (it needs a TFLM source
// tree). It uses only TFLM's public API: tflite::GetModel, MicroMutableOpResolver,
// MicroInterpreter. Build it inside a TFLM checkout next to the generated
// model_data.cc / model_data.h / model_ops.h.
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

namespace {

alignas(16) uint8_t tensor_arena[kTensorArenaSize];

int8_t Quantize(float x) {
  int32_t q = static_cast<int32_t>(std::lround(x / kInputScale)) + kInputZeroPoint;
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
#else
  // Stream mode: one step per invoke. Fused LSTM: the state stays in the op's variable
  // tensors (kNumStates == 0). Otherwise inputs 1..kNumStates are the recurrent states,
  // outputs 1..kNumStates the new states, with identical int8 quantization: copy the bytes;
  // at the start of every sequence set each state to its zero point (= the float value 0).
  for (int s = 1; s <= kNumStates; ++s) {
    TfLiteTensor* state = interpreter.input(s);
    std::memset(state->data.int8, static_cast<int8_t>(state->params.zero_point), state->bytes);
  }
  for (int t = 0; t < steps; ++t) {
    TfLiteTensor* input = interpreter.input(0);
    for (int f = 0; f < kModelFeatures; ++f) input->data.int8[f] = Quantize(features[t][f]);
    if (interpreter.Invoke() != kTfLiteOk) return 1;
    for (int s = 1; s <= kNumStates; ++s)
      std::memcpy(interpreter.input(s)->data.int8, interpreter.output(s)->data.int8, interpreter.output(s)->bytes);
  }
#endif

  TfLiteTensor* output = interpreter.output(0);
  int best = 0;
  for (int i = 0; i < static_cast<int>(output->bytes); ++i) {
    std::printf("output[%d] = %f\n", i, Dequantize(output->data.int8[i]));
    if (output->data.int8[i] > output->data.int8[best]) best = i;
  }
  std::printf("class %d\n", best);
  return 0;
}
