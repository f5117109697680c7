"""Video corpus -> clips: listing, rejection of bad files, resampling, clips, tracks and crops.

Every video here is written by the test with PyAV (tiny 160x120 demos), nothing is downloaded.
"""

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from motionfleet.core.errors import MissingFile, RejectedInput
from motionfleet.demo.videos import (
    demo_boxes,
    write_audio_only,
    write_corrupt_file,
    write_damaged_video,
    write_demo_tracks,
    write_demo_video,
    write_empty_file,
    write_truncated_video,
)
from motionfleet.socialmirror.video import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_DURATION_S,
    MAX_FRAME_PIXELS,
    MAX_PIXELS_PER_SECOND,
    DecodeStats,
    Frame,
    crop_people,
    crop_person,
    iter_clips,
    iter_frames,
    list_videos,
    probe_video,
    read_tracks,
    square_boxes,
)

NUM_FRAMES, FPS, SIZE = 48, 30, (160, 120)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A 48-frame 30 fps demo video with its sibling track file."""
    folder = tmp_path_factory.mktemp("demo")
    write_demo_video(folder / "demo.mp4", NUM_FRAMES, FPS, SIZE)
    write_demo_tracks(folder / "demo.tracks.csv", NUM_FRAMES, SIZE)
    return folder / "demo.mp4"


def reason_of(call, *args, **kwargs) -> str:
    with pytest.raises(RejectedInput) as caught:
        result = call(*args, **kwargs)
        if hasattr(result, "__next__"):
            list(result)
    return caught.value.reason


def synthetic_frames(count: int) -> list[Frame]:
    """Tiny frames whose pixel value is their index, so clips can be checked by content."""
    return [
        Frame(i, i / 15, np.full((2, 3, 3), i % 256, dtype=np.uint8), 2 * i, (1.0, 1.0)) for i in range(count)
    ]


# ----------------------------------------------------------------------------- clips


def test_clips_with_stride_16_pad_and_mask_the_last_clip():
    clips = list(iter_clips(synthetic_frames(40), clip_len=16, stride=16))

    assert [c.start_frame for c in clips] == [0, 16, 32]
    assert all(c.frames.shape == (16, 2, 3, 3) for c in clips)
    assert clips[0].mask.all() and clips[1].mask.all()
    last = clips[-1]
    assert last.mask.tolist() == [True] * 8 + [False] * 8
    assert last.frame_indices.tolist() == list(range(32, 40)) + [39] * 8
    assert (last.frames[8:] == 39).all()
    assert np.array_equal(last.owned, last.mask)
    assert np.allclose(clips[1].timestamps, np.arange(16, 32) / 15)
    assert clips[1].source_indices.tolist() == list(range(32, 64, 2))


def test_clips_with_stride_8_overlap_and_split_ownership_in_the_middle():
    clips = list(iter_clips(synthetic_frames(50), clip_len=16, stride=8))

    assert [c.start_frame for c in clips] == [0, 8, 16, 24, 32, 40]
    assert clips[-1].mask.sum() == 10
    owned = [c.frame_indices[c.owned].tolist() for c in clips]
    assert owned[0] == list(range(0, 12))
    assert owned[1] == list(range(12, 20))
    assert owned[-1] == list(range(44, 50))


@pytest.mark.parametrize("count", [1, 15, 16, 17, 33, 48, 50])
@pytest.mark.parametrize("stride", [1, 5, 8, 16])
def test_owned_frames_cover_every_frame_exactly_once(count, stride):
    clips = list(iter_clips(synthetic_frames(count), clip_len=16, stride=stride))

    owned = np.concatenate([c.frame_indices[c.owned] for c in clips])
    assert sorted(owned.tolist()) == list(range(count))
    for clip in clips:
        assert not (clip.owned & ~clip.mask).any()
        valid = clip.frame_indices[clip.mask]
        assert valid.tolist() == list(range(clip.start_frame, clip.start_frame + len(valid)))
        assert (clip.frames[clip.mask, 0, 0, 0] == valid % 256).all()


def test_no_frames_give_no_clips_and_bad_strides_are_refused():
    assert list(iter_clips([], clip_len=16, stride=16)) == []
    for stride in (0, 17):
        with pytest.raises(ValueError):
            list(iter_clips(synthetic_frames(4), clip_len=16, stride=stride))


# ----------------------------------------------------------------------------- decoding


def test_probe_reports_metadata(demo):
    info = probe_video(demo)

    assert (info.width, info.height, info.fps, info.num_frames) == (160, 120, 30.0, 48)
    assert info.duration_s == pytest.approx(1.6)


def test_resampling_30_to_15_fps_keeps_every_other_frame(demo):
    stats = DecodeStats()
    frames = list(iter_frames(demo, 15, stats=stats))

    assert len(frames) == 24
    assert [f.index for f in frames] == list(range(24))
    assert [f.source_index for f in frames] == list(range(0, 48, 2))
    assert np.allclose([f.timestamp_s for f in frames], np.arange(24) / 15)
    assert frames[0].rgb.shape == (120, 160, 3) and frames[0].rgb.dtype == np.uint8
    assert (stats.source_frames, stats.output_frames, stats.truncated) == (48, 24, False)


def test_resampling_to_same_and_higher_fps(demo):
    same = [f.source_index for f in iter_frames(demo, 30)]
    double = [f.source_index for f in iter_frames(demo, 60)]

    assert same == list(range(48))
    assert double == [i for i in range(48) for _ in range(2)]


def test_max_size_shrinks_frames_and_reports_scale(demo):
    frame = next(iter_frames(demo, 15, max_size=80))

    assert frame.rgb.shape == (60, 80, 3)
    assert frame.scale == (0.5, 0.5)


def test_demo_figures_are_where_their_boxes_say(demo):
    frame = next(iter_frames(demo, 30))
    (x0, y0, x1, y1), (u0, v0, u1, v1) = demo_boxes(NUM_FRAMES, SIZE)[0]

    red = frame.rgb[int((y0 + y1) / 2), int((x0 + x1) / 2)]
    blue = frame.rgb[int((v0 + v1) / 2), int((u0 + u1) / 2)]
    assert red[0] > 150 and red[2] < 100
    assert blue[2] > 150 and blue[0] < 100


# ----------------------------------------------------------------------------- rejection


def test_each_bad_video_is_rejected_with_its_reason_and_the_good_one_still_decodes(demo, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_demo_video(corpus / "good.mp4", 20, FPS, SIZE, seed=1)
    write_empty_file(corpus / "empty.mp4")
    write_corrupt_file(corpus / "corrupt.mp4")
    write_audio_only(corpus / "audio_only.mp4")
    write_truncated_video(corpus / "header_only.mp4", keep_fraction=0.0, num_frames=20)
    manifest = tmp_path / "corpus.txt"
    manifest.write_text("\n".join(["corpus/" + p.name for p in sorted(corpus.iterdir())] + ["corpus/gone.mp4"]))

    reasons, clips = {}, {}
    for item in list_videos(manifest):
        try:
            probe_video(item.path)
            clips[item.video_id] = list(iter_clips(iter_frames(item.path, 15)))
        except RejectedInput as err:
            reasons[item.video_id] = err.reason.split(":")[0]

    assert reasons == {
        "corpus/audio_only.mp4": "no_video_stream",
        "corpus/corrupt.mp4": "not_a_video",
        "corpus/empty.mp4": "empty_file",
        "corpus/gone.mp4": "missing_file",
        "corpus/header_only.mp4": "no_frames",
    }
    assert list(clips) == ["corpus/good.mp4"]
    assert [c.mask.sum() for c in clips["corpus/good.mp4"]] == [10]


def test_oversized_and_overlong_videos_are_rejected(demo):
    assert reason_of(probe_video, demo, max_frame_pixels=100 * 100).startswith("too_large")
    assert reason_of(probe_video, demo, max_pixels_per_second=160 * 120 * 29).startswith("too_large")
    assert reason_of(probe_video, demo, max_duration_s=1.0).startswith("too_long")


def test_default_limits_pass_4k_60fps_for_an_hour():
    assert 3840 * 2160 * 60 <= MAX_PIXELS_PER_SECOND and 3600 <= MAX_DURATION_S <= 24 * 3600
    assert 16384 * 16384 <= MAX_FRAME_PIXELS < 16385 * 16385


def test_truncated_video_keeps_its_decodable_frames_and_says_so(tmp_path):
    path = tmp_path / "cut.mp4"
    write_truncated_video(path, keep_fraction=0.5, num_frames=NUM_FRAMES)
    stats = DecodeStats()

    probe_video(path)
    clips = list(iter_clips(iter_frames(path, 30, stats=stats)))

    assert 0 < stats.output_frames < NUM_FRAMES
    assert stats.truncated and stats.note.startswith("decoding ended")
    assert sum(c.owned.sum() for c in clips) == stats.output_frames


def test_damaged_video_raises_mid_stream_or_truncates_on_request(tmp_path):
    path = tmp_path / "damaged.mp4"
    write_damaged_video(path, at_fraction=0.5)

    yielded = []
    with pytest.raises(RejectedInput) as caught:
        for frame in iter_frames(path, 30):
            yielded.append(frame)
    assert caught.value.reason.startswith("decode_error")
    assert len(yielded) > 0

    stats = DecodeStats()
    kept = list(iter_frames(path, 30, on_error="truncate", stats=stats))
    assert len(kept) >= len(yielded)
    assert stats.truncated and stats.note.startswith("decode_error")


# ----------------------------------------------------------------------------- tracks


def test_track_file_round_trip(demo):
    tracks = read_tracks(demo.with_name("demo.tracks.csv"))

    assert np.allclose(tracks.boxes_at(np.arange(NUM_FRAMES)), demo_boxes(NUM_FRAMES, SIZE))


def test_tracks_interpolate_between_listed_frames_and_hold_at_the_ends(tmp_path):
    path = tmp_path / "sparse.tracks.csv"
    path.write_text("frame,person,x0,y0,x1,y1\n0,0,0,0,10,10\n10,0,10,0,20,10\n5,1,50,50,60,60\n")
    boxes = read_tracks(path).boxes_at(np.array([0, 5, 20]))

    assert boxes[:, 0].tolist() == [[0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10]]
    assert (boxes[:, 1] == [50, 50, 60, 60]).all()


@pytest.mark.parametrize(
    "content",
    [
        "frame,person,x0,y0,x1\n0,0,0,0,1\n",
        "frame,person,x0,y0,x1,y1\n0,2,0,0,10,10\n",
        "frame,person,x0,y0,x1,y1\n0,0,10,0,5,10\n0,1,0,0,10,10\n",
        "frame,person,x0,y0,x1,y1\n0,0,0,0,10,10\n",
        "frame,person,x0,y0,x1,y1\n0,0,0,0,10,10\n0,0,0,0,10,10\n0,1,0,0,10,10\n",
        "frame,person,x0,y0,x1,y1\nzero,0,0,0,10,10\n",
    ],
    ids=["missing_column", "third_person", "inverted_box", "one_person", "duplicate_frame", "not_a_number"],
)
def test_malformed_track_files_are_rejected(tmp_path, content):
    path = tmp_path / "bad.tracks.csv"
    path.write_text(content)

    assert reason_of(read_tracks, path).startswith("bad_tracks")


def test_missing_track_file_is_rejected(tmp_path):
    assert reason_of(read_tracks, tmp_path / "none.tracks.csv").startswith("missing_file")


def test_clips_carry_track_boxes_in_frame_pixels(demo):
    tracks = read_tracks(demo.with_name("demo.tracks.csv"))
    clip = next(iter_clips(iter_frames(demo, 15, max_size=80), tracks=tracks))

    assert clip.tracks_source == "file"
    expected = demo_boxes(NUM_FRAMES, SIZE)[clip.source_indices] * 0.5
    assert np.allclose(clip.boxes, expected, atol=1e-4)


def test_without_tracks_both_people_get_the_full_frame(demo):
    clip = next(iter_clips(iter_frames(demo, 15)))

    assert clip.tracks_source == "full_frame"
    assert clip.boxes.shape == (16, 2, 4)
    assert (clip.boxes == [0, 0, 160, 120]).all()


# ----------------------------------------------------------------------------- crops


def normalised(rgb) -> torch.Tensor:
    return (torch.tensor(rgb, dtype=torch.float32) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)


def test_square_boxes_grow_to_the_longer_side_and_stay_inside():
    boxes = torch.tensor([[10.0, 10, 30, 50], [90, 0, 100, 20], [0, 0, 100, 60]])
    squares = square_boxes(boxes, width=100, height=60)

    assert squares.tolist() == [[0, 10, 40, 50], [80, 0, 100, 20], [0, -20, 100, 80]]


def test_crop_person_shape_and_normalisation():
    frames = np.zeros((3, 60, 100, 3), dtype=np.uint8)
    frames[:, 10:50, 20:60] = (200, 100, 50)
    crops = crop_person(frames, np.tile([20, 10, 60, 50], (3, 1)), size=32)

    assert crops.shape == (3, 3, 32, 32) and crops.dtype == torch.float32
    expected = normalised((200, 100, 50))
    assert torch.allclose(crops, expected.view(1, 3, 1, 1).expand_as(crops), atol=1e-5)


def test_full_frame_crop_pads_with_the_mean_colour():
    frames = np.full((1, 60, 100, 3), 255, dtype=np.uint8)
    crop = crop_person(frames, np.array([[0, 0, 100, 60]]), size=50)[0]

    assert torch.allclose(crop[:, :10], torch.zeros(3, 10, 50), atol=1e-6)
    assert torch.allclose(crop[:, 40:], torch.zeros(3, 10, 50), atol=1e-6)
    assert torch.allclose(crop[:, 10:40], normalised((255, 255, 255)).view(3, 1, 1).expand(3, 30, 50), atol=1e-5)


def test_large_boxes_are_antialiased():
    checker = (np.indices((512, 512)).sum(0) % 2 * 255).astype(np.uint8)
    frames = np.repeat(checker[None, :, :, None], 3, axis=3)
    crop = crop_person(frames, np.array([[0, 0, 512, 512]]), size=32)[0]

    grey = normalised((127.5, 127.5, 127.5)).view(3, 1, 1)
    assert (crop - grey).abs().max() < 0.1


def test_demo_clip_crops_show_red_person_a_and_blue_person_b(demo):
    tracks = read_tracks(demo.with_name("demo.tracks.csv"))
    clip = next(iter_clips(iter_frames(demo, 15), tracks=tracks))
    people = crop_people(clip, size=64)

    assert people.shape == (2, 16, 3, 64, 64)
    centre = people[:, :, :, 24:40, 28:36].mean(dim=(1, 3, 4))
    assert centre[0, 0] > centre[0, 2]
    assert centre[1, 2] > centre[1, 0]


# ----------------------------------------------------------------------------- listing


def make_corpus(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    for name in ("b.mp4", "sub/a.MKV", "sub/c.webm"):
        (root / name).write_bytes(b"x")
    (root / "notes.txt").write_text("not a video")
    (root / "b.tracks.csv").write_text("frame,person,x0,y0,x1,y1\n")


def test_folder_listing_is_recursive_sorted_and_finds_sibling_tracks(tmp_path):
    make_corpus(tmp_path)
    items = list_videos(tmp_path)

    assert [i.video_id for i in items] == ["b.mp4", "sub/a.MKV", "sub/c.webm"]
    assert items[0].path == tmp_path / "b.mp4"
    assert items[0].track_path == tmp_path / "b.tracks.csv"
    assert items[1].track_path is None


def test_txt_manifest_resolves_relative_paths_and_skips_comments(tmp_path):
    make_corpus(tmp_path / "videos")
    manifest = tmp_path / "list.txt"
    outside = tmp_path.parent / "elsewhere.mp4"
    manifest.write_text(f"# corpus\nvideos/sub/c.webm\n\nvideos/b.mp4\n{outside}\nvideos/./b.mp4\n")
    items = list_videos(manifest)

    assert [i.video_id for i in items] == sorted(["videos/sub/c.webm", "videos/b.mp4", outside.as_posix()])
    assert items[-1].path == tmp_path / "videos/sub/c.webm"


def test_parquet_manifest_reads_paths_and_track_paths(tmp_path):
    make_corpus(tmp_path / "videos")
    manifest = tmp_path / "corpus.parquet"
    table = pa.table({"path": ["videos/sub/a.MKV", "videos/b.mp4"], "track_path": ["tracks/a.csv", None]})
    pq.write_table(table, manifest)
    items = list_videos(manifest)

    assert [i.video_id for i in items] == ["videos/b.mp4", "videos/sub/a.MKV"]
    assert items[0].track_path == tmp_path / "videos/b.tracks.csv"
    assert items[1].track_path == tmp_path / "tracks/a.csv"


def test_listing_a_missing_corpus_or_unknown_file_fails(tmp_path):
    with pytest.raises(MissingFile):
        list_videos(tmp_path / "nowhere")
    (tmp_path / "corpus.json").write_text("[]")
    with pytest.raises(ValueError):
        list_videos(tmp_path / "corpus.json")


def test_a_path_is_never_an_ffmpeg_protocol(demo, tmp_path, monkeypatch):
    """Issue 10, case 7: a file literally named ``concat:a|b`` is that file (here corrupt), not the
    concatenation FFmpeg's concat protocol would read; a FIFO is refused, not opened (it would block)."""
    (tmp_path / demo.name).write_bytes(demo.read_bytes())
    monkeypatch.chdir(tmp_path)
    name = f"concat:{demo.name}|{demo.name}"
    write_corrupt_file(Path(name))
    assert reason_of(probe_video, name).startswith("not_a_video")
    os.mkfifo(tmp_path / "pipe.mp4")
    assert reason_of(probe_video, tmp_path / "pipe.mp4").startswith("not_a_file")
