#!/usr/bin/env bash
# Training run state that spans sessions lives in main's git history, not in its working tree
# (a GPU call carries at most 64 MiB of tree; training/README.md says why and how).
# training/STATE lists "<commit> <folder>" lines: each folder, as it is in that commit, is one
# part of the state (e.g. training/resume/v3 holds the v3 runs).
#
#   tools/training_state.sh restore DEST     write every listed folder to DEST/<name> (DEST/v2, DEST/v3, ...)
#   tools/training_state.sh check            every listed folder exists in this clone's history
#   tools/training_state.sh save NAME RUN... store the runs (folders of `ocdit train`) as DEST/NAME:
#        one commit adds training/resume/NAME/<run>/ (the newest checkpoint, log.jsonl,
#        model.safetensors, config.json: what resuming and reading the learning curve need), the
#        next removes it from the tree again and points training/STATE at the first. Only those
#        paths are committed; other staged or unstaged changes are left as they are.
set -euo pipefail
caller=$PWD  # paths given on the command line are the caller's
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
state=training/STATE

die() { echo "training_state: $*" >&2; exit 2; }

entries() { grep -v '^\s*\(#\|$\)' "$state"; }

check() {
    local commit folder ok=0
    while read -r commit folder; do
        if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
            echo "training_state: commit $commit (for $folder) is not in this clone;" \
                 "a shallow clone lacks it: run 'git fetch --unshallow'" >&2
            ok=2
        elif ! git cat-file -e "$commit:$folder" 2>/dev/null; then
            echo "training_state: $folder does not exist in commit $commit ($state is wrong)" >&2
            ok=2
        fi
    done < <(entries)
    return $ok
}

restore() {
    local dest=${1:?usage: training_state.sh restore DEST} commit folder
    [[ $dest = /* ]] || dest=$caller/$dest
    check || exit 2
    mkdir -p "$dest"
    while read -r commit folder; do
        local name=${folder##*/} tmp
        if [ -e "$dest/$name" ]; then echo "kept $dest/$name (already there)"; continue; fi
        tmp=$(mktemp -d "$dest/.restore.XXXXXX")
        # Strip the folder's own path so it lands as DEST/<name>; written to a temporary folder
        # first, so an interrupted restore never leaves half a run behind.
        git archive --format=tar "$commit" "$folder" | tar -x -C "$tmp"
        mv "$tmp/$folder" "$dest/$name" && rm -rf "$tmp"
        echo "restored $folder from ${commit:0:12} to $dest/$name"
    done < <(entries)
}

save() {
    local name=${1:?usage: training_state.sh save NAME RUN_DIR...}
    shift
    [ $# -gt 0 ] || die "save $name: name at least one run folder"
    case $name in */*|.*|"") die "save: NAME is one folder name (v4), not '$name'";; esac
    local folder=training/resume/$name
    [ -e "$folder" ] && die "$folder exists in the working tree; remove it first"
    local runs=() run
    for run in "$@"; do [[ $run = /* ]] && runs+=("$run") || runs+=("$caller/$run"); done
    set -- "${runs[@]}"
    for run in "$@"; do
        [ -d "$run" ] || die "save: $run is not a folder"
        [ -f "$run/model.safetensors" ] || [ -f "$run/last_checkpoint.txt" ] ||
            die "save: $run has neither model.safetensors nor last_checkpoint.txt: not a training run"
    done
    for run in "$@"; do
        local to=$folder/$(basename "$run") f
        mkdir -p "$to"
        for f in model.safetensors log.jsonl config.json last_checkpoint.txt; do
            [ -f "$run/$f" ] && cp "$run/$f" "$to/"
        done
        if [ -f "$run/last_checkpoint.txt" ]; then cp "$run/$(cat "$run/last_checkpoint.txt")" "$to/"; fi
    done
    git add -f -- "$folder"
    git commit -q -m "Training state $name: $(cd "$folder" && ls | tr '\n' ' ')(kept in history; next commit takes it out of the tree)" -- "$folder"
    local commit
    commit=$(git rev-parse HEAD)
    git rm -r -q -- "$folder"
    rm -rf "$folder"
    # One line per folder: a newer save of the same name replaces the old line.
    { grep -v " $folder\$" "$state" || true; echo "$commit $folder"; } > "$state.tmp" && mv "$state.tmp" "$state"
    git add -- "$state"
    git commit -q -m "training/STATE: $name at ${commit:0:12} (the state stays in history, not in main's tree)" -- "$folder" "$state"
    echo "saved $folder in ${commit:0:12}; training/STATE updated"
}

[ -f "$state" ] || die "$state is missing"
case ${1:-} in
    restore) shift; restore "$@" ;;
    check) check && echo "training_state: every folder of $state is in this clone" ;;
    save) shift; save "$@" ;;
    *) die "usage: training_state.sh restore DEST | check | save NAME RUN_DIR..." ;;
esac
