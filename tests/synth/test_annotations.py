"""The annotations detector's table from COCO, Visual Genome and Flickr30K Entities files in
their release formats; expected boxes worked by hand."""

import json

from tgg_jax.synth import annotations, cli


def test_coco_instances(tmp_path):
    path = tmp_path / "instances_train2017.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "000000000001.jpg"}],
        "categories": [{"id": 18, "name": "Dog"}, {"id": 1, "name": "person"}],
        "annotations": [
            {"id": 5, "image_id": 1, "category_id": 18, "bbox": [10, 20, 30, 40], "iscrowd": 0},
            {"id": 6, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 1},
            {"id": 7, "image_id": 9, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 0}]}))
    # [x, y, w, h] -> [x, y, x + w, y + h]; the crowd region and the unknown image are left out.
    assert annotations.convert("coco", str(path)) == {
        "000000000001.jpg": [{"phrase": "dog", "box": [10.0, 20.0, 40.0, 60.0]}]}


def test_visual_genome_objects(tmp_path):
    (tmp_path / "image_data.json").write_text(json.dumps([
        {"image_id": 7, "url": "https://cs.stanford.edu/people/rak248/VG_100K_2/7.jpg"}]))
    (tmp_path / "objects.json").write_text(json.dumps([{"image_id": 7, "objects": [
        {"object_id": 1, "x": 3, "y": 4, "w": 10, "h": 20, "names": ["Red  Car", "auto"]},
        {"object_id": 2, "x": 0, "y": 0, "w": 1, "h": 1, "names": []}]}]))
    assert annotations.convert("visual_genome", str(tmp_path)) == {
        "VG_100K_2/7.jpg": [{"phrase": "red car", "box": [3.0, 4.0, 13.0, 24.0]}]}


def test_flickr30k_entities_and_the_cli(tmp_path, capsys):
    (tmp_path / "Sentences").mkdir()
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Sentences" / "42.txt").write_text(
        "[/EN#1/people A man] holds [/EN#2/other two cups] .\n"
        "[/EN#1/people The man] smiles at [/EN#3/other nothing] .\n")
    obj = "<object><name>{}</name><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax>" \
          "<ymax>{}</ymax></bndbox></object>"
    (tmp_path / "Annotations" / "42.xml").write_text(
        "<annotation><size><width>100</width><height>80</height></size>"
        + obj.format(1, 11, 21, 50, 70) + obj.format(2, 61, 11, 70, 20)
        + obj.format(2, 81, 11, 90, 20)
        + "<object><name>3</name><nobndbox>1</nobndbox></object></annotation>")
    # 1-based inclusive corners: xmin 11 .. xmax 50 covers pixel edges 10 .. 50.
    man, cups = [10.0, 20.0, 50.0, 70.0], ([60.0, 10.0, 70.0, 20.0], [80.0, 10.0, 90.0, 20.0])
    expected = {"42.jpg": [{"phrase": "a man", "box": man},
                           {"phrase": "two cups", "box": cups[0]},
                           {"phrase": "two cups", "box": cups[1]},
                           {"phrase": "the man", "box": man}]}
    assert annotations.convert("flickr30k_entities", str(tmp_path)) == expected
    out = tmp_path / "images" / "annotations.json"
    try:
        cli.run(["tgg-synth", "annotations", "--source", "flickr30k_entities",
                 "--raw_dir", str(tmp_path), "--out", str(out)])
    except SystemExit as e:
        assert e.code == 0
    assert json.loads(out.read_text()) == expected
    assert "4 boxes of 1 images" in capsys.readouterr().out
