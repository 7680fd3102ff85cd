# The demo model's training recipe, shared by train.sh (the shipped model) and lopo.sh (its leave-one-patient-out
# folds). Sourced, not run. The shipped model then continues to SHIPPED_STEPS (a second, lower cosine cycle:
# resuming with more steps restarts the schedule at its value for the new length).
RECIPE=(
  --config scripts/demo-model/config.json
  --steps 2500 --batch-size 2 --patch-size 48 48 48
  --optimizer adamw --lr 0.002 --schedule cosine --warmup-steps 50
  --augmentation 1.0 --synthetic-ratio 0.3 --remap-ratio 0.4 --background-ratio 0.3 --lesion-probability 0.3
  --select last --val-every 500 --seed 0 --threads 1 --progress none
)
SHIPPED_STEPS=4000
