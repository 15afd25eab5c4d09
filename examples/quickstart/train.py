"""A toy training job for trying spotctl: prints progress, writes a checkpoint, and can resume."""
import json
import os
import sys
import time

EPOCHS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
ckpt_dir = os.environ.get("SPOTCTL_CHECKPOINT_DIR", "checkpoints")
os.makedirs(ckpt_dir, exist_ok=True)
ckpt = os.path.join(ckpt_dir, "state.json")

start = 0
if os.path.exists(ckpt):
    with open(ckpt) as f:
        start = json.load(f)["epoch"] + 1
    print(f"resuming from epoch {start}")

loss = 1.0
for epoch in range(start, EPOCHS):
    loss *= 0.7
    print(f"epoch {epoch + 1}/{EPOCHS} loss={loss:.4f}")
    tmp = ckpt + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"epoch": epoch, "loss": loss}, f)
    os.replace(tmp, ckpt)  # atomic: a reader never sees half a checkpoint
    time.sleep(0.2)

print("done", file=sys.stderr)
