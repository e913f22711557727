"""Independent reader of TensorBoard event files for the tests: the TFRecord framing
(uint64 length, masked CRC-32C of it, data, masked CRC-32C of the data) checked with a
CRC-32C written here from its definition (reflected polynomial 0x82F63B78), and each
record parsed as an Event by python3-protobuf from framework/proto/tensorboard_event.proto
(compiled with protoc into a temporary directory).

usage: tfevents_py.py EVENT_FILE  →  prints JSON: {"file_version": ..., "scalars":
[[tag, step, value]...], "texts": [[tag, step, text]...]}; exits 1 on a bad CRC."""
import importlib, json, os, struct, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "../../framework/proto")


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def records(path):
    data = open(path, "rb").read()
    at = 0
    while at < len(data):
        header = data[at:at + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[at + 8:at + 12])
        if length_crc != masked(crc32c(header)):
            sys.exit(f"record at byte {at}: bad length CRC")
        body = data[at + 12:at + 12 + length]
        (body_crc,) = struct.unpack("<I", data[at + 12 + length:at + 16 + length])
        if body_crc != masked(crc32c(body)):
            sys.exit(f"record at byte {at}: bad data CRC")
        yield body
        at += 16 + length


out_dir = tempfile.mkdtemp()
subprocess.check_call(["protoc", "--python_out", out_dir, "-I", PROTO_DIR, os.path.join(PROTO_DIR, "tensorboard_event.proto")])
sys.path.insert(0, out_dir)
pb = importlib.import_module("tensorboard_event_pb2")
result = {"file_version": None, "scalars": [], "texts": []}
for body in records(sys.argv[1]):
    event = pb.Event()
    event.ParseFromString(body)
    if event.HasField("file_version"):
        result["file_version"] = event.file_version
    for v in event.summary.value:
        if v.HasField("simple_value"):
            result["scalars"].append([v.tag, event.step, v.simple_value])
        elif v.HasField("tensor"):
            result["texts"].append([v.tag, event.step, v.tensor.string_val[0].decode()])
print(json.dumps(result))
