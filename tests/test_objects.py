"""Objects: analytic SDF signs, the mesh SDF path against the analytic box, SDF caching, lookup."""

import numpy as np
import pytest
import trimesh

from motionfleet.core.errors import RejectedInput
from motionfleet.core.io.digests import file_sha256
from motionfleet.scorehoi import objects

BOX_HALF_EXTENTS = np.array([0.15, 0.1, 0.05])


@pytest.fixture(scope="module")
def builtins():
    return objects.builtin_objects(resolution=16)


@pytest.fixture
def box_mesh_file(tmp_path):
    path = tmp_path / "crate.obj"
    trimesh.creation.box(extents=2 * BOX_HALF_EXTENTS).export(path)
    return path


def sdf_at_grid_point(template: objects.ObjectTemplate, point) -> float:
    """The grid sample nearest to ``point``."""
    spacing = (template.grid_max - template.grid_min) / (template.resolution - 1)
    i, j, k = np.rint((np.asarray(point) - template.grid_min) / spacing).astype(int)
    return float(template.sdf[i, j, k])


@pytest.mark.parametrize("name", ["box", "stool", "ball"])
def test_builtin_template_is_well_formed(builtins, name):
    template = builtins[name]
    assert template.name == name
    assert template.points.shape == (objects.NUM_TEMPLATE_POINTS, 3) and template.points.dtype == np.float32
    assert template.sdf.shape == (16, 16, 16) and template.sdf.dtype == np.float32
    assert np.all(template.grid_min < template.vertices.min(0)) and np.all(template.grid_max > template.vertices.max(0))
    assert template.faces.max() < len(template.vertices)
    np.testing.assert_allclose((template.vertices.min(0) + template.vertices.max(0)) / 2, 0.0, atol=1e-6)


@pytest.mark.parametrize("name", ["box", "stool", "ball"])
def test_template_points_lie_on_the_surface_and_are_deterministic(builtins, name):
    template = builtins[name]
    _, sdf = objects._BUILTIN_SHAPES[name]
    assert np.abs(sdf(template.points.astype(np.float64))).max() < 1e-3
    assert len(np.unique(template.points, axis=0)) == objects.NUM_TEMPLATE_POINTS
    np.testing.assert_array_equal(template.points, objects.builtin_object(name, resolution=16).points)


def test_analytic_sdf_signs(builtins):
    box, stool, ball = builtins["box"], builtins["stool"], builtins["ball"]
    assert sdf_at_grid_point(box, (0, 0, 0)) < -0.15
    assert sdf_at_grid_point(ball, (0, 0, 0)) < -0.09  # nearest sample is ~2 cm off centre
    assert sdf_at_grid_point(stool, (0.0, 0.205, 0.0)) < 0  # inside the seat
    assert sdf_at_grid_point(stool, (0.0, 0.0, 0.0)) > 0.1  # under the seat, between the legs
    for template in builtins.values():
        assert template.sdf[0, 0, 0] > 0 and template.sdf[-1, -1, -1] > 0  # grid corners are outside

    surface = np.array([[0.25, 0.0, 0.0], [0.0, 0.2, 0.0], [0.1, -0.2, 0.2]])
    np.testing.assert_allclose(objects.box_sdf(surface, (0, 0, 0), (0.25, 0.2, 0.2)), 0.0, atol=1e-12)
    np.testing.assert_allclose(objects.sphere_sdf(np.array([[0.0, 0.0, 0.12], [0.3, 0.4, 0.0]]), 0.12), [0.0, 0.38])


def test_mesh_sdf_matches_analytic_box_within_a_voxel(box_mesh_file, tmp_path):
    template = objects.load_object_mesh(box_mesh_file, tmp_path / "cache", resolution=16)
    assert template.name == "crate"
    analytic = objects.box_sdf(objects.grid_points(template.grid_min, template.grid_max, 16), 0.0, BOX_HALF_EXTENTS)
    voxel = float(((template.grid_max - template.grid_min) / 15).max())
    assert np.abs(template.sdf - analytic).max() < voxel
    assert np.array_equal(np.sign(template.sdf[8, 8, 8]), -1.0)
    assert np.abs(objects.box_sdf(template.points.astype(np.float64), 0.0, BOX_HALF_EXTENTS)).max() < 1e-6


def test_mesh_sdf_is_cached_by_content_and_resolution(box_mesh_file, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    first = objects.load_object_mesh(box_mesh_file, cache_dir, resolution=16)
    cache_file = cache_dir / f"{file_sha256(box_mesh_file)}_r16.npz"
    assert cache_file.is_file()

    def must_not_recompute(*args, **kwargs):
        raise AssertionError("SDF recomputed despite the cache")

    monkeypatch.setattr(objects, "_mesh_sdf_grid", must_not_recompute)
    second = objects.load_object_mesh(box_mesh_file, cache_dir, resolution=16)
    np.testing.assert_array_equal(second.sdf, first.sdf)
    np.testing.assert_array_equal(second.grid_min, first.grid_min)
    with pytest.raises(AssertionError, match="recomputed"):  # another resolution is another cache entry
        objects.load_object_mesh(box_mesh_file, cache_dir, resolution=8)


def test_missing_mesh_names_the_file(tmp_path):
    missing = tmp_path / "chair.obj"
    with pytest.raises(RejectedInput, match="chair.obj does not exist"):
        objects.load_object_mesh(missing, tmp_path)
    with pytest.raises(RejectedInput, match="chair.obj does not exist"):
        objects.get_object(missing, cache_dir=tmp_path)


def test_get_object_finds_builtins_and_mesh_files_and_rejects_unknown_names(box_mesh_file, tmp_path):
    assert objects.get_object("stool", resolution=8).name == "stool"
    assert objects.get_object(str(box_mesh_file), cache_dir=tmp_path, resolution=8).name == "crate"
    with pytest.raises(RejectedInput, match="unknown object 'sofa'"):
        objects.get_object("sofa")


TWO_BOXES = trimesh.util.concatenate([
    trimesh.creation.box(extents=(0.3, 0.2, 0.1)),
    trimesh.creation.box(extents=(0.1, 0.4, 0.1), transform=trimesh.transformations.translation_matrix((0.3, 0, 0)))])


@pytest.mark.parametrize("mesh", [trimesh.creation.annulus(0.05, 0.15, 0.1), trimesh.creation.icosphere(2, 0.12), TWO_BOXES],
                         ids=["annulus", "sphere", "two_boxes"])
def test_mesh_sdf_is_the_distance_to_the_nearest_face_signed_by_containment(mesh, monkeypatch):
    """Against every face measured (no candidate pruning) and a ray-cast inside test, on a grid whose
    points fall on faces, edges and corners, measured a few pairs at a time (the chunking path)."""
    monkeypatch.setattr(objects, "_SDF_PAIRS_AT_ONCE", 50)
    grid_min, grid_max = objects._padded_bounds(mesh.bounds)
    points = objects.grid_points(grid_min, grid_max, 12).reshape(-1, 3).astype(np.float64)
    ours = objects.mesh_signed_distance(mesh, points)
    every_face = [np.linalg.norm(p - trimesh.triangles.closest_point(mesh.triangles, np.tile(p, (len(mesh.faces), 1))),
                                 axis=1).min() for p in points]
    np.testing.assert_allclose(np.abs(ours), every_face, rtol=0, atol=1e-12)
    clear = np.abs(ours) > 1e-6  # off the surface, where a ray test is unambiguous
    np.testing.assert_array_equal(ours[clear] < 0, mesh.contains(points[clear]))


def write_box_with(tmp_path, name: str, coordinate: float):
    """A box mesh file whose first vertex's x is ``coordinate``."""
    box = trimesh.creation.box(extents=2 * BOX_HALF_EXTENTS)
    vertices = box.vertices.copy()
    vertices[0, 0] = coordinate
    trimesh.Trimesh(vertices, box.faces, process=False).export(tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("coordinate, reason", [(float("nan"), "NaN or infinite vertices"),
                                                (1e39, "NaN or infinite vertices"),
                                                (1e30, "1e\\+30 m from its origin"), (150.0, "meshes are in metres")])
def test_mesh_vertices_must_be_finite_and_in_metres(tmp_path, coordinate, reason):
    """Issue 23: trimesh's processing dropped a NaN vertex and its faces (a box with a hole was
    refined), and a 1e30 (or millimetre) vertex gave an SDF grid spanning it."""
    with pytest.raises(RejectedInput, match=reason):
        objects.load_object_mesh(write_box_with(tmp_path, "bad.obj", coordinate), tmp_path / "cache")
