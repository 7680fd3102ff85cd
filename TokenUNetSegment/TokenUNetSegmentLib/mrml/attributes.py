"""Every key under which this module marks MRML nodes, segments and subject-hierarchy items (one place).

Node attributes and segment tags are saved with the scene, so these strings are part of the file format.
"""

MODEL_TAG = "TokenUNet.Model"  # segment tag: the model id of a segment this module made
MASK_TAG = "TokenUNet.Mask"  # segment tag: fingerprint of its mask as written (a re-run keeps it if it changed)
TOKEN_ATTRIBUTE = "TokenUNet.Token"  # heatmap node attribute and attention segment tag: the token number
KIND_ATTRIBUTE = "TokenUNet.Kind"  # map kind: gather or broadcast
BEST_LABEL_ATTRIBUTE = "TokenUNet.BestLabel"  # the label a token's map matches best
SOFT_DICE_ATTRIBUTE = "TokenUNet.SoftDice"  # and its soft Dice
THRESHOLD_ATTRIBUTE = "TokenUNet.Threshold"  # attention segmentation: the threshold of its segments
PROBABILITY_ATTRIBUTE = "TokenUNet.Probability"  # probability volume: its label name
RUN_ATTRIBUTE = "TokenUNet.Run"  # subject-hierarchy folder of one run: its number
HEATMAP_ROLE = "tokenunetHeatmap"  # node reference role: attention segmentation -> its heatmap nodes
CONFIDENCE_TAG = "TokenUNet.Confidence"  # segment tag: the label's confidence in [0, 1], e.g. "0.83"
FLAGS_TAG = "TokenUNet.Flags"  # segment tag: the label's flag codes, comma-separated ("" when none)
FLAG_MESSAGES_TAG = "TokenUNet.FlagMessages"  # segment tag: what the flags mean, "; "-separated
RUN_FLAGS_ATTRIBUTE = "TokenUNet.RunFlags"  # segmentation node: the last run's scan-level flag codes
SUMMARY_ATTRIBUTE = "TokenUNet.Summary"  # segmentation node: the last run's one-line summary
