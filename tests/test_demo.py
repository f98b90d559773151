"""`lorm demo`'s one-line reading of the paired interval: it follows the numbers, and an
interval that contains 0 is said to decide nothing."""

from lorm.cli import DEMO_BETAS, DEMO_METHODS, demo_verdict, parser


def report(low, high, mean, seeds=3):
    significant = None if low is None else not (low <= 0.0 <= high)
    return {"by_beta": {"0.1": {"faa_difference": {
        "fedavg-lora": {"mean": mean, "low": low, "high": high, "significant": significant,
                        "seeds": seeds},
        "regmean-lora": {"mean": 0.0, "low": -0.01, "high": 0.01, "significant": False, "seeds": seeds}}}}}


def test_interval_clear_of_zero_is_called_a_gap():
    (line,) = demo_verdict(report(0.063, 0.119, 0.091))
    assert "above FedAvg-LoRA" in line and "[+6.3, +11.9]" in line and "excludes 0" in line


def test_interval_containing_zero_says_so():
    (line,) = demo_verdict(report(-0.02, 0.10, 0.04))
    assert "contains 0" in line and "cannot tell the two apart" in line and "above" not in line


def test_one_seed_concludes_nothing():
    (line,) = demo_verdict(report(None, None, 0.05, seeds=1))
    assert "nothing can be concluded" in line


def test_demo_defaults_to_the_label_skewed_setting():
    args = parser().parse_args(["demo"])
    assert args.betas == DEMO_BETAS == "0.1" and args.seeds == "0,1,2,3,4"
    assert DEMO_METHODS == ("lorm", "fedavg-lora")
