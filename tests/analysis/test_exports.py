import importlib


def test_public_names_are_functions_not_same_named_submodules():
    # Importing the submodules first is what used to shadow the lazily exported functions.
    for module in ("logit_lens", "head_scores", "tuned_lens", "composition"):
        importlib.import_module(f"circuits.analysis.{module}")
    from circuits.analysis import __all__, head_scores, logit_lens

    assert callable(logit_lens) and callable(head_scores)
    analysis = importlib.import_module("circuits.analysis")
    for name in __all__:
        assert not isinstance(getattr(analysis, name), type(analysis)), name
