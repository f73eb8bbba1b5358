"""Paths the tests share: the repository's root and the Note10 table it ships."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTE10 = ROOT / "tables" / "note10_w1.2_tflite.csv"
