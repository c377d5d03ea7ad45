"""The served tree: the ref read from Git's own files on every request (no git process),
always the committed tree, never the work tree; memo tables bounded."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from support.repos import DEV_SECRETS, SOPS_BIN, SecretsRepo, git

from broker.errors import BadRequest, NotFound
from broker.store.git import Answer
from broker.store.refs import RefReader, parse_packed_refs
from broker.store.sops import Decryptor
from broker.store.tree import DiskTree, GitTree, SecretStore, open_tree
from cli.caching import BoundedMemo


class CountingGitTree(GitTree):
    """A GitTree that counts the git processes it starts."""

    git_runs = 0

    def _git(self, *args: str) -> Answer:  # type: ignore[type-arg]
        self.git_runs += 1
        return super()._git(*args)


def counting_tree(repo: SecretsRepo, ref: str = "HEAD") -> CountingGitTree:
    tree = open_tree(repo.secrets_dir, ref)
    assert isinstance(tree, GitTree)
    return CountingGitTree(tree.repo, tree.subdir, ref)


def rev_parse(repo: SecretsRepo, name: str) -> str:
    return git(repo.path, "rev-parse", "--verify", f"{name}^{{commit}}")


@pytest.fixture
def decryptor(age_key_file: Path) -> Decryptor:
    return Decryptor(SOPS_BIN, age_key_file=str(age_key_file))


def test_each_kind_of_ref_resolves_as_git_does(secrets_repo: SecretsRepo):
    first = secrets_repo.commits[-1]
    git(secrets_repo.path, "tag", "light")
    git(secrets_repo.path, "tag", "-a", "-m", "release", "v1")  # annotated: peeled
    git(secrets_repo.path, "update-ref", "refs/remotes/origin/main", first)
    git(secrets_repo.path, "symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main")
    secrets_repo.write_and_commit("prod", {"API_KEY": "second"}, "secrets: second")
    refs = ["HEAD", "main", "refs/heads/main", "light", "v1", "refs/tags/v1", "origin/main"]
    refs.append("origin")  # refs/remotes/origin/HEAD, a symbolic ref
    for ref in refs:
        tree = counting_tree(secrets_repo, ref)
        assert tree.served().version == rev_parse(secrets_repo, ref), ref
        assert tree.git_runs == 0, ref
    assert counting_tree(secrets_repo, "v1").served().version == first


def test_packed_refs_are_read_and_a_later_loose_ref_wins(secrets_repo: SecretsRepo):
    git(secrets_repo.path, "pack-refs", "--all")
    assert not (secrets_repo.path / ".git" / "refs" / "heads" / "main").exists()
    tree = counting_tree(secrets_repo)
    assert tree.served().version == secrets_repo.commits[-1]
    sha = secrets_repo.write_and_commit("prod", {"API_KEY": "after-pack"}, "secrets: rotate")
    assert tree.served().version == sha
    git(secrets_repo.path, "pack-refs", "--all")
    assert tree.served().version == sha
    assert tree.git_runs == 0


def test_a_new_commit_is_served_from_the_next_call_without_a_git_process(
    secrets_repo: SecretsRepo,
):
    tree = counting_tree(secrets_repo)
    for i in range(5):
        sha = secrets_repo.write_and_commit("prod", {"API_KEY": f"v{i}"}, f"secrets: v{i}")
        assert tree.served().version == sha
        assert tree.served().version == sha
    assert tree.git_runs == 0


def test_a_ref_moved_many_times_within_one_clock_tick_is_followed_every_time(
    secrets_repo: SecretsRepo,
):
    first = secrets_repo.commits[-1]
    second = secrets_repo.write_and_commit("prod", {"API_KEY": "b"}, "secrets: b")
    tree = counting_tree(secrets_repo)
    for i in range(40):  # faster than file timestamps can tell apart
        target = first if i % 2 == 0 else second
        git(secrets_repo.path, "update-ref", "refs/heads/main", target)
        assert tree.served().version == target


def test_a_detached_head_is_served_and_followed(secrets_repo: SecretsRepo):
    first = secrets_repo.commits[-1]
    second = secrets_repo.write_and_commit("prod", {"API_KEY": "b"}, "secrets: b")
    tree = counting_tree(secrets_repo)
    git(secrets_repo.path, "checkout", "-q", "--detach", first)
    assert tree.served().version == first
    git(secrets_repo.path, "checkout", "-q", "--detach", second)
    assert tree.served().version == second


def test_a_relative_ref_is_resolved_by_git_on_every_call(secrets_repo: SecretsRepo):
    first = secrets_repo.commits[-1]
    second = secrets_repo.write_and_commit("prod", {"API_KEY": "b"}, "secrets: b")
    tree = counting_tree(secrets_repo, "main~1")
    assert tree.served().version == first
    secrets_repo.write_and_commit("prod", {"API_KEY": "c"}, "secrets: c")
    assert tree.served().version == second
    assert tree.git_runs == 2


def test_a_ref_with_no_commit_is_not_found(tmp_path: Path, age_key):
    from support.repos import make_secrets_repo

    repo = make_secrets_repo(tmp_path / "empty", age_key.recipient)
    tree = open_tree(repo.secrets_dir, "HEAD")
    with pytest.raises(NotFound):
        tree.served()
    assert RefReader(Path(tree.git_dir), Path(tree.common_dir)).resolve("HEAD") is None


def test_a_reftable_repository_is_left_to_git(secrets_repo: SecretsRepo):
    git_dir = secrets_repo.path / ".git"
    (git_dir / "reftable").mkdir()
    assert RefReader(git_dir, git_dir).resolve("HEAD") is None


def test_packed_refs_parsing_skips_comments_and_peeled_lines():
    sha, peeled = "a" * 40, "b" * 40
    text = f"# pack-refs with: peeled fully-peeled sorted\n{sha} refs/tags/v1\n^{peeled}\n"
    assert parse_packed_refs(text.encode()) == {"refs/tags/v1": sha}


def test_uncommitted_edits_are_never_served(secrets_repo: SecretsRepo, decryptor: Decryptor):
    store = SecretStore(open_tree(secrets_repo.secrets_dir, "HEAD"), decryptor)
    secrets_repo.write("dev", {"DATABASE_URL": "uncommitted"})
    document = store.document(store.served(), "dev")
    assert document["DATABASE_URL"] == DEV_SECRETS["DATABASE_URL"]


def test_a_file_unchanged_by_a_commit_keeps_its_blob_and_is_not_decrypted_again(
    secrets_repo: SecretsRepo, decryptor: Decryptor
):
    store = SecretStore(open_tree(secrets_repo.secrets_dir, "HEAD"), decryptor)
    before = store.served()
    store.document(before, "dev")
    secrets_repo.write_and_commit("prod", {"API_KEY": "rotated"}, "secrets: rotate prod")
    after = store.served()
    assert after.version != before.version
    assert store.tree.blob(after, "dev") == store.tree.blob(before, "dev")
    assert store.document(after, "dev")["PORT"] == 8080
    assert decryptor.decrypt_count == 1


def test_an_old_version_is_answered_from_memory_after_the_first_time(
    secrets_repo: SecretsRepo,
):
    first = secrets_repo.commits[-1]
    secrets_repo.write_and_commit("prod", {"API_KEY": "b"}, "secrets: b")
    tree = counting_tree(secrets_repo)
    assert tree.at_version(first[:10]).version == first
    runs = tree.git_runs
    for _ in range(10):
        assert tree.at_version(first[:10]).version == first
    assert tree.git_runs == runs
    with pytest.raises(NotFound):
        tree.at_version("0" * 40)
    with pytest.raises(BadRequest):
        tree.at_version("HEAD~1")


def test_environments_are_listed_from_the_commit(secrets_repo: SecretsRepo):
    tree = open_tree(secrets_repo.secrets_dir, "HEAD")
    secrets_repo.write("qa", {"A": "uncommitted"})
    assert tree.listing(tree.served()).environments == ("dev", "prod")


def test_a_disk_tree_sees_a_same_size_rewrite_at_once(tmp_path: Path):
    (tmp_path / "dev.enc.yaml").write_bytes(b"a: 1\n")
    tree = DiskTree(tmp_path)
    first = tree.blob(tree.served(), "dev")
    (tmp_path / "dev.enc.yaml").write_bytes(b"a: 2\n")
    second = tree.blob(tree.served(), "dev")
    assert first is not None and second is not None
    assert first[0] != second[0] and second[1] == b"a: 2\n"
    assert tree.blob(tree.served(), "missing") is None


def test_memo_tables_stay_bounded():
    memo: BoundedMemo[int, int] = BoundedMemo(max_entries=3)
    for i in range(10):
        memo.put(i, i)
        assert len(memo._data) <= 3
    assert memo.get(9) == 9


RACY = 0.05  # the reader's racy window in these tests (2 s in the broker)


def wait_settled(*paths: Path) -> None:
    """Poll until the files are older than the racy window, so the reader remembers them."""
    deadline = time.monotonic() + 10
    while any(time.time() - max(p.stat().st_mtime, p.stat().st_ctime) <= RACY for p in paths):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_remembered_ref_is_followed_when_git_moves_it(secrets_repo: SecretsRepo):
    first = secrets_repo.commits[-1]
    second = secrets_repo.write_and_commit("prod", {"API_KEY": "b"}, "secrets: b")
    git_dir = secrets_repo.path / ".git"
    ref = git_dir / "refs" / "heads" / "main"
    reader = RefReader(git_dir, git_dir, racy_seconds=RACY)
    for target in (first, second, first, second):
        git(secrets_repo.path, "update-ref", "refs/heads/main", target)
        assert reader.resolve("HEAD") == target  # a fresh file: read
        wait_settled(ref, git_dir / "HEAD")
        assert reader.resolve("HEAD") == target  # settled: read once more, then remembered
        assert reader.resolve("HEAD") == target


def test_a_remembered_ref_rewritten_in_place_with_its_old_mtime_is_still_followed(
    secrets_repo: SecretsRepo,
):
    # Same inode, same size, same mtime: only the change time gives the rewrite away.
    first = secrets_repo.commits[-1]
    second = secrets_repo.write_and_commit("prod", {"API_KEY": "b"}, "secrets: b")
    git_dir = secrets_repo.path / ".git"
    ref = git_dir / "refs" / "heads" / "main"
    reader = RefReader(git_dir, git_dir, racy_seconds=RACY)
    wait_settled(ref, git_dir / "HEAD")
    assert reader.resolve("HEAD") == second
    before = ref.stat()
    with ref.open("r+") as f:
        f.write(first + "\n")
    os.utime(ref, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = ref.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    assert reader.resolve("HEAD") == first


def test_a_remembered_answer_follows_head_to_another_branch_and_into_packed_refs(
    secrets_repo: SecretsRepo,
):
    first = secrets_repo.commits[-1]
    second = secrets_repo.write_and_commit("prod", {"API_KEY": "b"}, "secrets: b")
    git(secrets_repo.path, "branch", "older", first)
    git_dir = secrets_repo.path / ".git"
    reader = RefReader(git_dir, git_dir, racy_seconds=RACY)
    wait_settled(git_dir / "refs" / "heads" / "main", git_dir / "refs" / "heads" / "older")
    for _ in range(3):  # read, settled and kept, then answered from what was kept
        assert reader.resolve("HEAD") == second
    git(secrets_repo.path, "symbolic-ref", "HEAD", "refs/heads/older")
    assert reader.resolve("HEAD") == first
    wait_settled(git_dir / "HEAD")
    for _ in range(3):
        assert reader.resolve("HEAD") == first
    git(secrets_repo.path, "pack-refs", "--all", "--prune")  # the loose file goes
    git(secrets_repo.path, "update-ref", "refs/heads/older", second)
    assert reader.resolve("HEAD") == second
