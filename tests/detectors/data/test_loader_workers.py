from detectors.data.workers import loader_workers


def test_a_trial_gets_one_worker_per_cpu_beyond_the_training_loop_and_never_more_than_asked():
    assert [loader_workers(c, 8) for c in (1, 2, 4, 4.5, 16)] == [1, 1, 3, 3, 8]
    assert loader_workers(0.5, 2) == 1  # a fractional CPU still overlaps loading with the step
    assert loader_workers(16, 2) == 2  # the config's request caps it
    assert loader_workers(16, 0) == 0  # 0: load in the training process, as asked
