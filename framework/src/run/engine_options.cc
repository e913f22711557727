#include "posttrain/run/engine_options.h"

namespace posttrain {

absl::StatusOr<EngineOptions> EngineOptions::FromConfig(const ComponentConfig& c, const TrainerNeeds& needs) {
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
  o.disable_dropout = c.GetBool("disable_dropout");
  o.use_cpu = c.GetBool("use_cpu");
  o.full_determinism = c.GetBool("full_determinism");
  o.ddp_timeout = c.GetInt("ddp_timeout");
  o.fsdp = c.GetString("fsdp");
  o.shuffle = c.GetBool("shuffle");
  o.max_length = needs.rollouts ? -1 : c.GetInt("max_length");
  o.max_prompt_length = c.GetInt("max_prompt_length");
  if (needs.rewards) o.reward_workers = c.GetInt("reward_workers");
  o.truncation_mode = c.GetString("truncation_mode");
  if (needs.reference) o.ref_model = c.GetString("ref_model");
  o.chat_template_path = c.GetString("chat_template_path");
  for (const std::string& sink : c.GetStringList("report_to")) {
    if (sink == "tensorboard" || sink == "all") {
      o.tensorboard = true;
    } else if (sink != "none") {
      return c.Error("report_to", absl::StrCat("'", sink, "' is not supported (\"tensorboard\", \"all\" or \"none\")"));
    }
  }
  o.logging_dir = c.GetString("logging_dir");
  return o;
}

}  // namespace posttrain
