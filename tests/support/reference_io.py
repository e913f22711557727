"""What the python references of tests/framework/model share: the inputs a test
writes (DIR/config.json, DIR/model.safetensors, DIR/ids.safetensors, and a PEFT
adapter with --adapter, tests/support/peft_lora_py.py) read in fp64, and the logits
written back as DIR/reference_logits.safetensors."""
import json

from safetensors_py import load, save
from peft_lora_py import load_lora


def read_inputs(argv, model_type, rename=lambda k: k):
    """(cfg, w, ids, lora, scaling) for DIR = argv[1]: the config (its model_type
    checked), the weights in fp64 under rename(name), the ids, and load_lora's
    result for argv."""
    d = argv[1]
    cfg = json.load(open(d + "/config.json"))
    assert cfg["model_type"] == model_type, cfg["model_type"]
    w = {rename(k): v.double() for k, v in load(d + "/model.safetensors").items()}
    ids = load(d + "/ids.safetensors")["ids"].long()
    lora, scaling = load_lora(argv, w, lambda v: v.double())  # "<module>.weight" -> {"A", "B"}
    return cfg, w, ids, lora, scaling


def write_logits(d, logits):
    save(d + "/reference_logits.safetensors", {"logits": logits.float()})
    print("reference logits", tuple(logits.shape))
