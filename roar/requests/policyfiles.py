"""Where training-request policies live. Every `roar run` looks for them;
only when one exists (or a request is named) is roar/requests/training.py loaded."""

from __future__ import annotations

import os

POLICY_FILE = "policy.toml"  # in the store's home
REPO_POLICY = ".roar/policy.toml"  # in a git work tree: may only tighten the store's


def any_policy(home, repo_root: str | None) -> bool:
    """Whether a store or repo policy file is there (readable or not: a
    broken policy is reported by the requests module, never skipped)."""
    paths = [os.path.join(home, POLICY_FILE)]
    if repo_root:
        paths.append(os.path.join(repo_root, REPO_POLICY))
    return any(os.path.lexists(p) for p in paths)
