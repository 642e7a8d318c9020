# Sourced by the bench scripts that run two al_compare comparisons at once.

# share_threads ARGS: unless OMP_NUM_THREADS is set, give each run its share of the
# cores for two comparisons of --jobs N (ARGS: the al_compare options). al_compare
# alone divides the cores by its own --jobs only; two at once would run twice as many
# threads as cores, and OpenMP threads that spin waiting for each other then slow
# every run several times over (measured on 2 cores beside two other one-thread runs:
# 4.2 s a mean-teacher iteration with two threads a run, 0.7 s with one).
share_threads() {
    local jobs=1 previous=
    for arg in "$@"; do
        case $arg in --jobs=*) jobs=${arg#--jobs=} ;; esac
        if [ "$previous" = --jobs ]; then jobs=$arg; fi
        previous=$arg
    done
    local share=$(( $(nproc) / (2 * jobs) ))
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( share > 0 ? share : 1 ))}
}

# wait_both NAME PID PID: wait for the two comparisons; exit with the first failure.
wait_both() {
    local name=$1 status=0
    wait "$2" || status=$?
    wait "$3" || status=$?
    if [ $status != 0 ]; then
        echo "$name: a comparison failed (rc $status); rerun to resume it" >&2
        exit $status
    fi
}
