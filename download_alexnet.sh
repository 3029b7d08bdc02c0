#!/usr/bin/env bash
# Download BVLC AlexNet (Caffe) and convert it to deep-spectrum's frozen graph.
#
# Fetches deploy.prototxt and bvlc_alexnet.caffemodel into convert-models/downloads/,
# checks the caffemodel's SHA-1, and runs convert-models/convert_caffe.py to write
# deep-spectrum/AlexNet.pb.  Run with --help for the options and the environment
# variables that change URLs, checksum, paths and the Python interpreter.
#
# Prerequisites: bash, coreutils (sha1sum) or shasum, curl or wget (else Python's
# urllib is used), and a Python with the project's dependencies (pipenv install).
set -euo pipefail

PROG="download_alexnet.sh"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

CAFFEMODEL_URL="${ALEXNET_CAFFEMODEL_URL:-http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel}"
PROTOTXT_URL="${ALEXNET_PROTOTXT_URL:-https://raw.githubusercontent.com/BVLC/caffe/master/models/bvlc_alexnet/deploy.prototxt}"
EXPECTED_SHA1="${ALEXNET_SHA1:-9116a64c0fbe4459d18f4bb6b56d647b63920377}"
PROTOTXT_SHA1="${ALEXNET_PROTOTXT_SHA1:-}"
OUTPUT="${ALEXNET_OUTPUT:-$ROOT/deep-spectrum/AlexNet.pb}"
DOWNLOAD_DIR="${ALEXNET_DOWNLOAD_DIR:-$ROOT/convert-models/downloads}"
DOWNLOADER="${ALEXNET_DOWNLOADER:-}"
CONVERTER="$ROOT/convert-models/convert_caffe.py"
FETCHER="$ROOT/convert-models/fetch_url.py"

usage() {
    cat <<EOF
Usage: $PROG [--force] [--no-verify] [-o FILE] [--caffemodel FILE [--prototxt FILE]]
       $PROG --download-only [--no-verify]

Download BVLC AlexNet in Caffe's format and convert it to the frozen TensorFlow
graph deep-spectrum uses ($OUTPUT by default).

Options:
  --force            convert again even if the output file already exists
  --caffemodel FILE  convert this caffemodel instead of downloading one (for
                     machines without internet); its SHA-1 is still checked
  --prototxt FILE    use this network definition; with --caffemodel and without
                     --prototxt the definition stored in the caffemodel is used,
                     otherwise deploy.prototxt is downloaded
  --no-verify        skip the caffemodel's SHA-1 check (for other AlexNet-shaped
                     models; the converter still checks the network's structure)
  --download-only    download and verify the files, do not convert (to convert
                     on another machine with --caffemodel and --prototxt)
  -o, --output FILE  where to write the graph
  -h, --help         show this help

A download goes to FILE.part first and is renamed only when complete and verified;
an interrupted download is resumed by the next run, a file with the wrong checksum
is renamed to FILE.bad so that the next run downloads it again.

Environment:
  ALEXNET_CAFFEMODEL_URL  caffemodel address   ($CAFFEMODEL_URL)
  ALEXNET_PROTOTXT_URL    prototxt address     ($PROTOTXT_URL)
  ALEXNET_SHA1            expected caffemodel SHA-1 ($EXPECTED_SHA1)
  ALEXNET_PROTOTXT_SHA1   expected prototxt SHA-1 (not checked if empty)
  ALEXNET_OUTPUT          output file          ($OUTPUT)
  ALEXNET_DOWNLOAD_DIR    download folder      ($DOWNLOAD_DIR)
  ALEXNET_DOWNLOADER      curl, wget or python (default: the first one available)
  PYTHON                  Python command for the conversion (default: "pipenv run
                          python" if pipenv and the Pipfile are there, else python3)

Exit status: 0 when the graph was written or already existed, 1 on errors,
2 for invalid options.
EOF
}

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage_error() { log "error: $*"; echo "Try '$PROG --help'." >&2; exit 2; }
lower() { printf '%s' "$1" | tr '[:upper:]' '[:lower:]'; }

FORCE=0
VERIFY=1
DOWNLOAD_ONLY=0
LOCAL_CAFFEMODEL=""
LOCAL_PROTOTXT=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --force) FORCE=1 ;;
        --no-verify) VERIFY=0 ;;
        --download-only) DOWNLOAD_ONLY=1 ;;
        --caffemodel|--prototxt|-o|--output)
            [[ $# -ge 2 && -n "$2" ]] || usage_error "$1 needs a file name"
            case "$1" in
                --caffemodel) LOCAL_CAFFEMODEL="$2" ;;
                --prototxt) LOCAL_PROTOTXT="$2" ;;
                *) OUTPUT="$2" ;;
            esac
            shift ;;
        --caffemodel=*) LOCAL_CAFFEMODEL="${1#*=}" ;;
        --prototxt=*) LOCAL_PROTOTXT="${1#*=}" ;;
        --output=*) OUTPUT="${1#*=}" ;;
        *) usage_error "unknown argument '$1'" ;;
    esac
    shift
done

if [[ $DOWNLOAD_ONLY -eq 1 && -n "$LOCAL_CAFFEMODEL" ]]; then
    usage_error "--download-only and --caffemodel exclude each other"
fi
if [[ $DOWNLOAD_ONLY -eq 0 && -e "$OUTPUT" && $FORCE -eq 0 ]]; then
    log "$OUTPUT already exists; nothing to do (use --force to convert again)"
    exit 0
fi

# ----------------------------------------------------------------- tools

if [[ -n "${PYTHON:-}" ]]; then
    read -r -a PYTHON_CMD <<< "$PYTHON"
elif command -v pipenv >/dev/null 2>&1 && [[ -f "$ROOT/Pipfile" ]]; then
    PYTHON_CMD=(pipenv run python)
    export PIPENV_PIPFILE="$ROOT/Pipfile"
elif command -v python3 >/dev/null 2>&1; then
    PYTHON_CMD=(python3)
else
    die "no Python found: install python3 or set PYTHON"
fi
[[ ${#PYTHON_CMD[@]} -gt 0 ]] || die "PYTHON is empty"

if [[ $DOWNLOAD_ONLY -eq 0 ]]; then
    # Check the converter's dependencies before downloading 244 MB for nothing.
    missing="$("${PYTHON_CMD[@]}" -c '
import importlib.util
names = ("numpy", "google.protobuf", "tensorflow")
print(" ".join(n for n in names if importlib.util.find_spec(n) is None))
' 2>/dev/null)" || die "cannot run Python (${PYTHON_CMD[*]}); set PYTHON to a Python 3 command"
    [[ -z "$missing" ]] || die "Python (${PYTHON_CMD[*]}) lacks: $missing; install the project's dependencies (pipenv install) or set PYTHON"
fi

sha1_of() {
    local sum
    if command -v sha1sum >/dev/null 2>&1; then
        sum="$(sha1sum < "$1")"
    elif command -v shasum >/dev/null 2>&1; then
        sum="$(shasum -a 1 < "$1")"
    else
        sum="$("${PYTHON_CMD[@]}" -c '
import hashlib, sys
digest = hashlib.sha1()
with open(sys.argv[1], "rb") as handle:
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
print(digest.hexdigest())
' "$1")"
    fi
    printf '%s' "${sum%% *}"
}

if [[ -z "$DOWNLOADER" ]]; then
    if command -v curl >/dev/null 2>&1; then
        DOWNLOADER=curl
    elif command -v wget >/dev/null 2>&1; then
        DOWNLOADER=wget
    else
        DOWNLOADER=python
    fi
fi
case "$DOWNLOADER" in
    curl|wget) command -v "$DOWNLOADER" >/dev/null 2>&1 || die "ALEXNET_DOWNLOADER=$DOWNLOADER, but $DOWNLOADER is not installed" ;;
    python) ;;
    *) die "ALEXNET_DOWNLOADER must be curl, wget or python, not '$DOWNLOADER'" ;;
esac

# fetch URL FILE resume|fresh: one transfer attempt; returns the downloader's status.
fetch() {
    local url="$1" file="$2" mode="$3" rc=0
    if [[ "$mode" == fresh ]]; then rm -f -- "$file"; fi
    case "$DOWNLOADER" in
        curl)
            local progress=(--silent --show-error)
            if [[ -t 2 ]]; then progress=(--progress-bar); fi
            local resume=()
            if [[ "$mode" == resume ]]; then resume=(--continue-at -); fi
            curl --fail --location --connect-timeout 30 --retry 3 "${progress[@]}" \
                ${resume[@]+"${resume[@]}"} --output "$file" "$url" || rc=$?
            ;;
        wget)
            local progress=(--no-verbose)
            if [[ -t 2 ]]; then progress=(--progress=bar); fi
            local resume=()
            if [[ "$mode" == resume ]]; then resume=(--continue); fi
            wget --tries=3 --timeout=60 "${progress[@]}" ${resume[@]+"${resume[@]}"} \
                --output-document="$file" "$url" || rc=$?
            ;;
        python)
            local resume=()
            if [[ "$mode" == fresh ]]; then resume=(--no-resume); fi
            "${PYTHON_CMD[@]}" "$FETCHER" ${resume[@]+"${resume[@]}"} "$url" "$file" || rc=$?
            ;;
    esac
    return "$rc"
}

# refused STATUS: whether a downloader's exit status means the server answered with
# an error (for a resumed transfer: it would not continue this file) rather than
# a broken transfer.
refused() {
    case "$DOWNLOADER:$1" in
        curl:22|curl:33|wget:8|python:3) return 0 ;;
        *) return 1 ;;
    esac
}

# download URL FILE [resume]: fetch into FILE.part, rename to FILE when complete.
# With "resume", an existing FILE.part is continued; if the server will not
# continue it, the transfer starts over.  A transfer that breaks off keeps
# FILE.part for the next run.
download() {
    local url="$1" file="$2" mode="${3:-fresh}" part="$2.part" rc=0
    if [[ "$mode" == resume && -s "$part" ]]; then
        log "resuming $url ($(wc -c < "$part" | tr -d ' ') bytes already in $part) with $DOWNLOADER"
    else
        mode=fresh
        log "downloading $url with $DOWNLOADER"
    fi
    fetch "$url" "$part" "$mode" || rc=$?
    if [[ $rc -ne 0 && "$mode" == resume ]] && refused "$rc"; then
        log "the server did not continue $part ($DOWNLOADER exit status $rc); starting over"
        mode=fresh
        rc=0
        fetch "$url" "$part" fresh || rc=$?
    fi
    if [[ $rc -ne 0 ]]; then
        if [[ -s "$part" ]] && ! refused "$rc"; then
            die "the download of $url was interrupted ($DOWNLOADER exit status $rc) after $(wc -c < "$part" | tr -d ' ') bytes; run $PROG again to resume it"
        fi
        rm -f -- "$part"
        die "cannot download $url ($DOWNLOADER exit status $rc)"
    fi
    [[ -f "$part" ]] || die "the download of $url produced no file"
    mv -f -- "$part" "$file"
}

# verify FILE EXPECTED: 0 if FILE's SHA-1 is EXPECTED; else prints the actual one.
verify() {
    local actual
    actual="$(lower "$(sha1_of "$1")")"
    if [[ "$actual" == "$(lower "$2")" ]]; then
        return 0
    fi
    printf '%s' "$actual"
    return 1
}

# ----------------------------------------------------------------- get the files

PROTOTXT=""
if [[ -n "$LOCAL_PROTOTXT" ]]; then
    [[ -f "$LOCAL_PROTOTXT" ]] || die "prototxt $LOCAL_PROTOTXT does not exist"
    PROTOTXT="$LOCAL_PROTOTXT"
fi

if [[ -n "$LOCAL_CAFFEMODEL" ]]; then
    [[ -f "$LOCAL_CAFFEMODEL" ]] || die "caffemodel $LOCAL_CAFFEMODEL does not exist"
    CAFFEMODEL="$LOCAL_CAFFEMODEL"
    if [[ $VERIFY -eq 1 ]]; then
        log "checking the SHA-1 of $CAFFEMODEL"
        if ! actual="$(verify "$CAFFEMODEL" "$EXPECTED_SHA1")"; then
            die "checksum mismatch for $CAFFEMODEL: expected SHA-1 $EXPECTED_SHA1, got $actual; it is not BVLC's AlexNet caffemodel or it is damaged (use --no-verify to convert it anyway)"
        fi
    else
        log "not checking the SHA-1 of $CAFFEMODEL (--no-verify)"
    fi
    if [[ -z "$PROTOTXT" ]]; then
        log "no --prototxt given: using the network definition stored in $CAFFEMODEL"
    fi
else
    mkdir -p -- "$DOWNLOAD_DIR"
    if [[ -z "$PROTOTXT" ]]; then
        PROTOTXT="$DOWNLOAD_DIR/deploy.prototxt"
        if [[ -f "$PROTOTXT" ]]; then
            log "using $PROTOTXT (downloaded before)"
        else
            download "$PROTOTXT_URL" "$PROTOTXT"
        fi
        if [[ -n "$PROTOTXT_SHA1" ]] && ! actual="$(verify "$PROTOTXT" "$PROTOTXT_SHA1")"; then
            mv -f -- "$PROTOTXT" "$PROTOTXT.bad"
            die "checksum mismatch for $PROTOTXT_URL: expected SHA-1 $PROTOTXT_SHA1, got $actual; moved the file to $PROTOTXT.bad, run $PROG again to download it afresh"
        fi
    fi
    CAFFEMODEL="$DOWNLOAD_DIR/bvlc_alexnet.caffemodel"
    if [[ -f "$CAFFEMODEL" ]]; then
        if [[ $VERIFY -eq 0 ]]; then
            log "using $CAFFEMODEL (downloaded before; not checking its SHA-1)"
        elif actual="$(verify "$CAFFEMODEL" "$EXPECTED_SHA1")"; then
            log "using $CAFFEMODEL (downloaded before, SHA-1 ok)"
        else
            mv -f -- "$CAFFEMODEL" "$CAFFEMODEL.bad"
            log "$CAFFEMODEL has SHA-1 $actual, not $EXPECTED_SHA1; moved it to $CAFFEMODEL.bad and downloading it again"
        fi
    fi
    if [[ ! -f "$CAFFEMODEL" && $VERIFY -eq 1 && -s "$CAFFEMODEL.part" ]] \
            && verify "$CAFFEMODEL.part" "$EXPECTED_SHA1" > /dev/null; then
        log "$CAFFEMODEL.part is complete (SHA-1 ok)"
        mv -f -- "$CAFFEMODEL.part" "$CAFFEMODEL"
    fi
    if [[ ! -f "$CAFFEMODEL" ]]; then
        resumed=0
        if [[ -s "$CAFFEMODEL.part" ]]; then resumed=1; fi
        download "$CAFFEMODEL_URL" "$CAFFEMODEL" resume
        if [[ $VERIFY -eq 1 ]]; then
            if [[ $resumed -eq 1 ]] && ! actual="$(verify "$CAFFEMODEL" "$EXPECTED_SHA1")"; then
                # The partial file may have come from another download: start over once.
                log "the resumed download has SHA-1 $actual, not $EXPECTED_SHA1; downloading it again from the start"
                rm -f -- "$CAFFEMODEL"
                download "$CAFFEMODEL_URL" "$CAFFEMODEL"
            fi
            if ! actual="$(verify "$CAFFEMODEL" "$EXPECTED_SHA1")"; then
                mv -f -- "$CAFFEMODEL" "$CAFFEMODEL.bad"
                die "checksum mismatch for $CAFFEMODEL_URL: expected SHA-1 $EXPECTED_SHA1, got $actual; moved the file to $CAFFEMODEL.bad, run $PROG again to download it afresh"
            fi
            log "SHA-1 ok: $(lower "$EXPECTED_SHA1")"
        else
            log "not checking the SHA-1 of $CAFFEMODEL (--no-verify)"
        fi
    fi
fi

if [[ $DOWNLOAD_ONLY -eq 1 ]]; then
    log "downloaded $CAFFEMODEL and $PROTOTXT (not converted: --download-only)"
    exit 0
fi

# ----------------------------------------------------------------- convert

args=(--caffemodel "$CAFFEMODEL" --output "$OUTPUT")
if [[ -n "$PROTOTXT" ]]; then args+=(--prototxt "$PROTOTXT"); fi
log "converting with ${PYTHON_CMD[*]} $CONVERTER"
"${PYTHON_CMD[@]}" "$CONVERTER" "${args[@]}" || die "conversion failed; $OUTPUT was not written"
log "done: $OUTPUT"
