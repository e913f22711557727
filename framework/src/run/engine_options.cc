#include "posttrain/run/engine_options.h"

namespace posttrain {

const ComponentSchema& EngineSchema() {
  static const ComponentSchema* schema = new ComponentSchema(
      ComponentSchema("The engine's loop, shared by every trainer.")
          .Int("per_device_train_batch_size", 8, "Examples (prompts, pairs) per micro-batch.")
          .Int("per_device_eval_batch_size", 8, "Examples per evaluation batch.")
          .Int("gradient_accumulation_steps", 1, "Micro-batches per optimisation step.")
          .Int("max_steps", -1, "Optimisation steps; if > 0 it overrides num_train_epochs.")
          .Float("num_train_epochs", 3.0, "Passes over the training data.")
          .Float("learning_rate", 5e-5, "Peak learning rate of AdamW.")
          .Float("weight_decay", 0.0, "AdamW decoupled weight decay.")
          .Float("adam_beta1", 0.9, "AdamW beta1.")
          .Float("adam_beta2", 0.999, "AdamW beta2.")
          .Float("adam_epsilon", 1e-8, "AdamW epsilon.")
          .Float("max_grad_norm", 1.0, "Clip the global gradient norm to this (0: off).")
          .String("lr_scheduler_type", "linear", "Learning-rate schedule.",
                  {"linear", "cosine", "constant", "constant_with_warmup"})
          .Float("warmup_ratio", 0.0, "Warm-up as a fraction of max_steps.")
          .Int("warmup_steps", 0, "Warm-up steps (overrides warmup_ratio if > 0).")
          .Int("logging_steps", 10, "Write a metrics.jsonl line every this many steps.")
          .Int("eval_steps", 0, "Evaluate every this many steps and at the end (0: only at the end if there is eval data).")
          .Bool("eval_on_start", false, "Evaluate before the first step too.")
          .Int("save_steps", 0, "Write checkpoint-<step>/ every this many steps (0: none).")
          .Int("save_total_limit", -1, "Keep at most this many checkpoints, deleting the oldest (-1: all).")
          .String("resume_from_checkpoint", "",
                  "Continue from a checkpoint directory, or \"latest\" for the newest in output_dir.")
          .Bool("bf16", false, "bf16 autocast for forward and backward (fp32 master weights).")
          .Bool("shuffle", true, "Reshuffle the training data every epoch (seeded).")
          .Int("max_length", 1024, "Truncate prompt + completion to this many tokens.")
          .Int("max_prompt_length", 512, "Truncate prompts to this many tokens.")
          .Int("reward_workers", 8,
               "Threads scoring rewards while generation runs (a oneTBB arena); rewards that wait "
               "(programs, servers) gain from more than the cores.")
          .String("truncation_mode", "keep_end", "Which end of a long prompt to keep.", {"keep_end", "keep_start"})
          .String("ref_model", "", "Reference model directory (default: a frozen copy of the initial policy)."));
  return *schema;
}

EngineOptions EngineOptions::FromConfig(const ComponentConfig& c) {
  EngineOptions o;
  o.per_device_train_batch_size = c.GetInt("per_device_train_batch_size");
  o.per_device_eval_batch_size = c.GetInt("per_device_eval_batch_size");
  o.gradient_accumulation_steps = c.GetInt("gradient_accumulation_steps");
  o.max_steps = c.GetInt("max_steps");
  o.num_train_epochs = c.GetFloat("num_train_epochs");
  o.learning_rate = c.GetFloat("learning_rate");
  o.weight_decay = c.GetFloat("weight_decay");
  o.adam_beta1 = c.GetFloat("adam_beta1");
  o.adam_beta2 = c.GetFloat("adam_beta2");
  o.adam_epsilon = c.GetFloat("adam_epsilon");
  o.max_grad_norm = c.GetFloat("max_grad_norm");
  o.lr_scheduler_type = c.GetString("lr_scheduler_type");
  o.warmup_ratio = c.GetFloat("warmup_ratio");
  o.warmup_steps = c.GetInt("warmup_steps");
  o.logging_steps = c.GetInt("logging_steps");
  o.eval_steps = c.GetInt("eval_steps");
  o.eval_on_start = c.GetBool("eval_on_start");
  o.save_steps = c.GetInt("save_steps");
  o.save_total_limit = c.GetInt("save_total_limit");
  o.resume_from_checkpoint = c.GetString("resume_from_checkpoint");
  o.bf16 = c.GetBool("bf16");
  o.shuffle = c.GetBool("shuffle");
  o.max_length = c.GetInt("max_length");
  o.max_prompt_length = c.GetInt("max_prompt_length");
  o.reward_workers = c.GetInt("reward_workers");
  o.truncation_mode = c.GetString("truncation_mode");
  o.ref_model = c.GetString("ref_model");
  return o;
}

}  // namespace posttrain
