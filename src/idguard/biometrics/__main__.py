"""`python -m idguard.biometrics`: recompute the calibrated default decision threshold.

Prints the threshold at FMR 1/10,000 on the held-out synthetic impostor set; copy it into
`matching.DEFAULT_THRESHOLD` when the matcher or the synthetic model changes.
"""

from idguard.biometrics.calibration import DEFAULT_FMR, calibrate_default_threshold

threshold, comparisons = calibrate_default_threshold()
print(f"threshold at FMR {DEFAULT_FMR:g}: {threshold!r} from {comparisons} impostor comparisons")
