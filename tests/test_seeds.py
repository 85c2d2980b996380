"""hebm_jax.evaluation.seeds: the runs it reads, the spread over seeds, the pairing by seed."""

import json
import math

import numpy as np
import pytest

from hebm_jax.evaluation import seeds


def _write(root, name, step, results, stamp="", std=None, anomaly_settings=None):
  path = root / name / "eval"
  path.mkdir(parents=True, exist_ok=True)
  record = {"checkpoint_steps": [step], "results": results, "std_over_checkpoints": std or {}}
  if anomaly_settings is not None:
    record["settings"] = {"seed": 1, "anomaly": anomaly_settings}
  (path / f"results_{step:08d}{stamp}.json").write_text(json.dumps(record))


def _z(z3, val=None):
  out = {"latent_classifier/z1": 0.3, "latent_classifier/z2": 0.4, "latent_classifier/z3": z3}
  if val is not None:
    out["latent_classifier_val/z3"] = val
  return out


def test_runs_are_read_from_their_newest_results_not_the_files_set_aside(tmp_path):
  _write(tmp_path, "table1_ebm_s1", 4000, _z(0.5))
  _write(tmp_path, "table1_ebm_s1", 12000, _z(0.7))
  _write(tmp_path, "table1_ebm_s1", 90000, _z(0.1), stamp=".20261205T010203")  # set aside
  _write(tmp_path, "anomaly4_gaussian_s2", 5000, {"anomaly/auprc": 0.68},
         std={"anomaly/auprc": 0.016})
  _write(tmp_path, "sweep_ebm_s1", 10, _z(0.9))        # not a run of the script
  (tmp_path / "table1_gaussian_s1").mkdir()             # not evaluated yet
  runs = seeds.load_runs(str(tmp_path))
  assert [r.name for r in runs] == ["anomaly4_gaussian_s2", "table1_ebm_s1"]
  anomaly, table1 = runs
  assert anomaly.arm == ("anomaly", 4, "", "gaussian") and anomaly.seed == 2
  assert table1.arm == ("table1", None, "", "ebm") and table1.steps == (12000,)
  assert table1.results["latent_classifier/z3"] == 0.7
  # Table 3's protocol is mean ± std over checkpoints: the run's line keeps the std.
  assert "anomaly4_gaussian_s2         AUPRC 0.680 ± 0.016 (steps 5000-5000)" in seeds.report(runs)


def test_spread_is_the_sample_std_and_the_student_t_interval():
  s = seeds.spread([1.0, 3.0])
  assert s.n == 2 and s.mean == 2.0
  np.testing.assert_allclose(s.std, math.sqrt(2))
  np.testing.assert_allclose([s.low, s.high], [2 - 12.7062047, 2 + 12.7062047], rtol=1e-7)
  five = seeds.spread([1.0, 2.0, 3.0, 4.0, 5.0])  # std sqrt(2.5), t(0.975, 4) = 2.7764451
  np.testing.assert_allclose(five.high - five.mean, 2.7764451 * math.sqrt(2.5 / 5), rtol=1e-7)
  one = seeds.spread([0.25])
  assert one.n == 1 and one.mean == 0.25 and math.isnan(one.std)
  assert one.format(100) == "25.00 (n=1)"
  with pytest.raises(ValueError, match="no values"):
    seeds.spread([])


def test_priors_are_paired_on_the_seeds_both_have(tmp_path):
  for seed, ebm, gauss in ((1, 0.70, 0.60), (2, 0.50, 0.55), (3, 0.80, None)):
    _write(tmp_path, f"table1_ebm_s{seed}", 100, _z(ebm))
    if gauss is not None:
      _write(tmp_path, f"table1_gaussian_s{seed}", 100, _z(gauss))
  runs = seeds.load_runs(str(tmp_path))
  used, diff = seeds.paired(runs, "latent_classifier/z3", "table1")
  assert used == [1, 2]
  np.testing.assert_allclose(diff.mean, (0.10 - 0.05) / 2)
  assert seeds.paired(runs, "latent_classifier/z3", "anomaly", digit=4) is None
  arms = seeds.by_arm(runs, "latent_classifier/z3")
  assert arms[("table1", None, "", "ebm")].n == 3 and arms[("table1", None, "", "gaussian")].n == 2
  np.testing.assert_allclose(arms[("table1", None, "", "ebm")].mean, 2.0 / 3)
  text = seeds.report(runs)
  assert "table1_ebm_s3" in text and "seeds 1,2" in text


def test_anomaly_runs_scored_differently_are_neither_averaged_nor_paired(tmp_path):
  # A run re-scored on the disjoint test set must not be mixed with runs scored on MEG's split.
  meg = {"protocol": "meg", "score_variant": "w=gfactor,z=mean", "held_out_digit": 4}
  disjoint = {**meg, "protocol": "disjoint"}
  _write(tmp_path, "anomaly4_ebm_s1", 100, {"anomaly/auprc": 0.80}, anomaly_settings=meg)
  _write(tmp_path, "anomaly4_ebm_s2", 100, {"anomaly/auprc": 0.70}, anomaly_settings=disjoint)
  _write(tmp_path, "anomaly4_gaussian_s1", 100, {"anomaly/auprc": 0.75}, anomaly_settings=meg)
  _write(tmp_path, "anomaly4_gaussian_s2", 100, {"anomaly/auprc": 0.60}, anomaly_settings=meg)
  runs = seeds.load_runs(str(tmp_path))
  assert runs[0].scoring == "meg split, w=gfactor,z=mean"
  assert runs[1].scoring == "disjoint split, w=gfactor,z=mean"
  arms = seeds.by_arm(runs, "anomaly/auprc")
  assert arms[("anomaly", 4, "meg split, w=gfactor,z=mean", "ebm")].n == 1
  assert arms[("anomaly", 4, "meg split, w=gfactor,z=mean", "gaussian")].n == 2
  used, diff = seeds.paired(runs, "anomaly/auprc", "anomaly", 4,
                            scoring="meg split, w=gfactor,z=mean")
  assert used == [1]  # seed 2's EBM was scored on the disjoint set: no pair
  np.testing.assert_allclose(diff.mean, 0.05)
  assert seeds.paired(runs, "anomaly/auprc", "anomaly", 4,
                      scoring="disjoint split, w=gfactor,z=mean") is None
  text = seeds.report(runs)
  assert "AUPRC 0.700 (steps 100-100; disjoint split, w=gfactor,z=mean)" in text
  assert "ebm, digit 4, disjoint split, w=gfactor,z=mean" in text


def test_the_command_names_an_empty_directory(tmp_path, capsys):
  assert seeds.main(["seeds", str(tmp_path)]) == 2
  assert "no evaluated" in capsys.readouterr().err
  assert seeds.main(["seeds", str(tmp_path / "missing")]) == 2
  assert "usage" in capsys.readouterr().err
  _write(tmp_path, "table1_ebm_s7", 100, _z(0.61, val=0.6))
  assert seeds.main(["seeds", str(tmp_path)]) == 0
  out = capsys.readouterr().out
  assert "val z3 60.00 %" in out and "61.00 (n=1)" in out
