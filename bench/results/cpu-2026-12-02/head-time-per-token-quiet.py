import sys, json, torch
sys.path.insert(0, "/work/main/bench")
sys.argv = ["run.py", "--threads", "1"]
import run, real_head
torch.set_num_threads(1)
s = run._settings(run.parse_args(["--threads", "1", "--repeats", "5"]))
shape = real_head.head_shape(s)
res = real_head._time_per_token(s, shape, ["ours", "naive", real_head.CCE])
print(json.dumps(res, indent=1))
