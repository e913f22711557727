#include "posttrain/api/training_arguments.h"

namespace posttrain {

const ComponentSchema& TrainingArgumentsSchema() {
  static const ComponentSchema* schema = new ComponentSchema(
      ComponentSchema("The engine's loop, shared by every trainer.")
          .Int("per_device_train_batch_size", 8, "Examples (prompts, pairs) per micro-batch.").AtLeast(1)
          .Int("per_device_eval_batch_size", 8, "Examples per evaluation batch.").AtLeast(1)
          .Int("gradient_accumulation_steps", 1, "Micro-batches per optimisation step.").AtLeast(1)
          .Int("max_steps", -1, "Optimisation steps; if > 0 it overrides num_train_epochs (-1: from the epochs).").AtLeast(1).OrEqualTo(-1)
          .Float("num_train_epochs", 3.0, "Passes over the training data.").GreaterThan(0)
          .Float("learning_rate", 5e-5, "Peak learning rate of AdamW.").AtLeast(0)
          .Float("weight_decay", 0.0, "AdamW decoupled weight decay (not on biases nor norm weights, as transformers' Trainer).").AtLeast(0)
          .Float("adam_beta1", 0.9, "AdamW beta1.").AtLeast(0).LessThan(1)
          .Float("adam_beta2", 0.999, "AdamW beta2.").AtLeast(0).LessThan(1)
          .Float("adam_epsilon", 1e-8, "AdamW epsilon.").GreaterThan(0)
          .Float("max_grad_norm", 1.0, "Clip the global gradient norm to this (0: off).").AtLeast(0)
          .String("lr_scheduler_type", "linear", "Learning-rate schedule.",
                  {"linear", "cosine", "constant", "constant_with_warmup"})
          .Float("warmup_ratio", 0.0, "Warm-up as a fraction of max_steps.").AtLeast(0).AtMost(1)
          .Int("warmup_steps", 0, "Warm-up steps (overrides warmup_ratio if > 0).").AtLeast(0)
          .Int("logging_steps", 10, "Write a metrics.jsonl line every this many steps.").AtLeast(1)
          .StringList("report_to", {"none"},
                      "Where logged metrics go besides metrics.jsonl (HF's name): [\"tensorboard\"] writes TensorBoard "
                      "event files to logging_dir; \"none\" nothing more.")
          .String("logging_dir", "", "TensorBoard's directory (default: <output_dir>/runs).")
          .Int("eval_steps", 0, "Evaluate every this many steps and at the end (0: only at the end if there is eval data).").AtLeast(0)
          .Bool("eval_on_start", false, "Evaluate before the first step too.")
          .Int("save_steps", 0, "Write checkpoint-<step>/ every this many steps (0: none).").AtLeast(0)
          .Int("save_total_limit", -1, "Keep at most this many checkpoints, deleting the oldest (-1: all).").AtLeast(1).OrEqualTo(-1)
          .String("resume_from_checkpoint", "",
                  "Continue from a checkpoint directory, or \"latest\" for the newest in output_dir.")
          .String("fsdp", "",
                  "FSDP-style sharding over the ranks (HF TrainingArguments' name): \"full_shard\" (parameters, "
                  "gradients and optimizer state sharded; a layer gathered for its forward and again for its backward), "
                  "\"shard_grad_op\" (kept gathered from forward to backward), \"no_shard\" or \"\" (data parallel).",
                  {"", "no_shard", "full_shard", "shard_grad_op"})
          .Int("ddp_timeout", 1800,
               "Seconds any collective (and the ranks' rendezvous) may wait before the run stops with an error "
               "(HF TrainingArguments' name).").AtLeast(1)
          .Bool("use_cpu", false,
                "Run on the CPU even where libtorch has CUDA and a GPU is present (HF TrainingArguments' name); "
                "otherwise each process takes cuda:<LOCAL_RANK>.")
          .Bool("full_determinism", false,
                "Deterministic kernels only (HF TrainingArguments' name): libtorch's deterministic algorithms "
                "(an op without one is an error naming it), cuBLAS with a fixed workspace "
                "(CUBLAS_WORKSPACE_CONFIG=:4096:8 unless set), cuDNN deterministic and not benchmarking. "
                "On CUDA, a run and its resume from a checkpoint then give the same weights bit for bit; "
                "on the CPU posttrain's kernels are deterministic already.")
          .Bool("bf16", false, "bf16 autocast for forward and backward (fp32 master weights).")
          .Bool("disable_dropout", false,
                "Train without the dropout the model's config.json sets (TRL's name; its DPO-family, reward, KTO, "
                "PPO and distillation trainers default to true, SFT and GRPO to false). Only forwards with gradients "
                "drop: generation, reference log-probabilities and evaluation never do.")
          .Bool("shuffle", true, "Reshuffle the training data every epoch (seeded).")
          .Int("max_length", 1024, "Truncate prompt + completion to this many tokens (offline trainers).").AtLeast(1)
          .Int("max_prompt_length", 512, "Truncate prompts to this many tokens (online trainers: what the sampler is given).").AtLeast(1)
          .Int("reward_workers", 8,
               "Threads scoring rewards while generation runs (a oneTBB arena); rewards that wait "
               "(programs, servers) gain from more than the cores.").AtLeast(1)
          .String("truncation_mode", "keep_end", "Which end of a long prompt to keep.", {"keep_end", "keep_start"})
          .String("ref_model", "", "Reference model directory (default: a frozen copy of the initial policy).")
          .String("chat_template_path", "",
                  "A Jinja chat template file for conversational data (default: the tokenizer's own, from "
                  "tokenizer_config.json or chat_template.jinja)."));
  return *schema;
}

}  // namespace posttrain
