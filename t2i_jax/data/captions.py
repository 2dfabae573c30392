"""The words of the captioned-shapes dataset: vocabulary, scene structures, captions.

A scene holds one object at one of nine named positions, or two objects in a
spatial relation. `ObjectSpec` and `Scene` are its structured ground truth
(integer ids, with the names as properties); `caption_for` turns a scene into
English from several templates and synonyms. The renderer (`shapes.py`) adds the
geometry: RGB values, sizes in pixels and where each position lies.

Every id indexes the matching name tuple: `COLORS[obj.color]`,
`SHAPES[obj.shape]`, `SIZES[obj.size]`, `POSITIONS[obj.position]`,
`RELATIONS[scene.relation]`. A two-object scene reads as
"objects[0] <relation> objects[1]", e.g. relation "left of" puts objects[0] on
the left.
"""

import dataclasses
from typing import Optional, Sequence, Tuple, Union

import numpy as np

COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle", "star", "cross")
SIZES = ("small", "large")
# Row-major over a 3 x 3 grid: id = 3 * row + column, row 0 at the top.
POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
RELATIONS = ("left of", "right of", "above", "below")

# Synonyms, indexed like the tuples above; the first entry is the canonical word.
# Colours have none: a colour name is what the evaluation oracle measures.
SIZE_WORDS = (("small", "tiny", "little"), ("large", "big"))
SHAPE_WORDS = (("circle", "disk"), ("square", "box"), ("triangle",), ("star",), ("cross", "plus sign"))
POSITION_PHRASES = (
    ("at the top left", "in the top left corner", "in the upper left"),
    ("at the top", "at the top of the image", "near the top"),
    ("at the top right", "in the top right corner", "in the upper right"),
    ("at the left", "on the left", "on the left side"),
    ("in the center", "in the middle", "at the center"),
    ("at the right", "on the right", "on the right side"),
    ("at the bottom left", "in the bottom left corner", "in the lower left"),
    ("at the bottom", "at the bottom of the image", "near the bottom"),
    ("at the bottom right", "in the bottom right corner", "in the lower right"),
)
RELATION_PHRASES = (
    ("to the left of", "left of", "on the left of"),
    ("to the right of", "right of", "on the right of"),
    ("above", "over"),
    ("below", "under", "beneath"),
)

# {obj}, {obj0} and {obj1} include their article ("a small red circle").
SINGLE_TEMPLATES = (
    "{obj} {pos}",
    "there is {obj} {pos}",
    "{pos}, there is {obj}",
    "a picture of {obj} {pos}",
    "{obj} is {pos}",
)
# The third template names the reference object first, so that word order
# alone never tells the model which object is on which side.
PAIR_TEMPLATES = (
    "{obj0} {rel} {obj1}",
    "there is {obj0} {rel} {obj1}",
    "{obj1} with {obj0} {rel} it",
    "a picture of {obj0} {rel} {obj1}",
    "{obj0} is {rel} {obj1}",
)

# How many uniforms `caption_from_uniforms` reads.
NUM_CAPTION_UNIFORMS = 6


def _to_id(field: str, value, names: Sequence[str]) -> int:
  if isinstance(value, str):
    if value not in names:
      raise ValueError(f"{field}={value!r} is not in the vocabulary; use one of {', '.join(map(repr, names))}.")
    return names.index(value)
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{field} must be an integer id or a name from {names}, got {value!r}.")
  if not 0 <= value < len(names):
    raise ValueError(
        f"{field}={value} is out of range; ids run 0..{len(names) - 1} for {', '.join(map(repr, names))}.")
  return int(value)


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
  """One object of a scene. Each id may also be given as its name; it is stored as the id.

  Attributes:
    color: id into COLORS.
    shape: id into SHAPES.
    size: id into SIZES.
    position: id into POSITIONS for a one-object scene; None in a two-object
      scene, whose layout follows the relation.
    center: optional (x, y) of the object's centre as fractions of the image
      side, y pointing down, each in [0, 1]. None means "place it from the
      position or relation" (see `shapes.layout`).
  """
  color: Union[int, str]
  shape: Union[int, str]
  size: Union[int, str]
  position: Optional[Union[int, str]] = None
  center: Optional[Tuple[float, float]] = None

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)
    set_("color", _to_id("color", self.color, COLORS))
    set_("shape", _to_id("shape", self.shape, SHAPES))
    set_("size", _to_id("size", self.size, SIZES))
    if self.position is not None:
      set_("position", _to_id("position", self.position, POSITIONS))
    if self.center is not None:
      center = tuple(float(c) for c in np.asarray(self.center, dtype=np.float64).reshape(-1))
      if len(center) != 2 or not all(0.0 <= c <= 1.0 for c in center):
        raise ValueError(
            f"center={self.center!r} must be (x, y) with both in [0, 1] (fractions of the image side).")
      set_("center", center)

  color_name = property(lambda self: COLORS[self.color])
  shape_name = property(lambda self: SHAPES[self.shape])
  size_name = property(lambda self: SIZES[self.size])
  position_name = property(lambda self: None if self.position is None else POSITIONS[self.position])

  def as_dict(self) -> dict:
    """Ids and names as plain Python values, e.g. for JSON metadata."""
    return dict(color=self.color, color_name=self.color_name, shape=self.shape, shape_name=self.shape_name,
                size=self.size, size_name=self.size_name, position=self.position,
                position_name=self.position_name, center=self.center)


@dataclasses.dataclass(frozen=True)
class Scene:
  """One or two objects; two objects need a relation (id into RELATIONS, or its name).

  The relation reads "objects[0] <relation> objects[1]".
  """
  objects: Tuple[ObjectSpec, ...]
  relation: Optional[Union[int, str]] = None

  def __post_init__(self):
    objects = tuple(self.objects)
    if not 1 <= len(objects) <= 2 or not all(isinstance(o, ObjectSpec) for o in objects):
      raise ValueError(f"a scene holds one or two ObjectSpec objects, got {self.objects!r}.")
    object.__setattr__(self, "objects", objects)
    if len(objects) == 1:
      if self.relation is not None:
        raise ValueError(f"relation={self.relation!r} needs two objects; a one-object scene uses "
                         "the object's position instead, so pass relation=None.")
      if objects[0].position is None and objects[0].center is None:
        raise ValueError("a one-object scene needs the object's position (one of POSITIONS) or its center.")
    else:
      if self.relation is None:
        raise ValueError(f"a two-object scene needs a relation, one of {RELATIONS}.")
      object.__setattr__(self, "relation", _to_id("relation", self.relation, RELATIONS))
      if any(o.position is not None for o in objects):
        raise ValueError("objects of a two-object scene are placed by the relation; build them with "
                         "position=None.")

  relation_name = property(lambda self: None if self.relation is None else RELATIONS[self.relation])

  def as_dict(self) -> dict:
    """Ids and names as plain Python values."""
    return dict(objects=[o.as_dict() for o in self.objects], relation=self.relation,
                relation_name=self.relation_name)


def _pick(options: Sequence[str], u: Optional[float]) -> str:
  if u is None:
    return options[0]
  return options[min(int(u * len(options)), len(options) - 1)]


def _object_phrase(obj: ObjectSpec, u_size: Optional[float], u_shape: Optional[float]) -> str:
  words = f"{_pick(SIZE_WORDS[obj.size], u_size)} {obj.color_name} {_pick(SHAPE_WORDS[obj.shape], u_shape)}"
  return ("an " if words[0] in "aeiou" else "a ") + words


def caption_from_uniforms(scene: Scene, u: Optional[Sequence[float]]) -> Tuple[str, int]:
  """Caption and template id chosen by NUM_CAPTION_UNIFORMS uniforms in [0, 1).

  The dataset draws these with the rest of an example's randomness, so that one
  generator call per example fixes everything. `u=None` gives the canonical
  caption: the first template and the first synonym of every word.

  Returns:
    (caption, template id into SINGLE_TEMPLATES or PAIR_TEMPLATES).
  """
  u = [None] * NUM_CAPTION_UNIFORMS if u is None else [float(x) for x in u]
  if len(u) < NUM_CAPTION_UNIFORMS:
    raise ValueError(f"caption_from_uniforms needs {NUM_CAPTION_UNIFORMS} uniforms, got {len(u)}.")
  templates = SINGLE_TEMPLATES if len(scene.objects) == 1 else PAIR_TEMPLATES
  template = 0 if u[0] is None else min(int(u[0] * len(templates)), len(templates) - 1)
  phrases = [_object_phrase(obj, u[1 + 2 * i], u[2 + 2 * i]) for i, obj in enumerate(scene.objects)]
  if len(scene.objects) == 1:
    obj = scene.objects[0]
    if obj.position is None:
      raise ValueError("this one-object scene has only a center; captions need its position id.")
    return templates[template].format(obj=phrases[0], pos=_pick(POSITION_PHRASES[obj.position], u[5])), template
  rel = _pick(RELATION_PHRASES[scene.relation], u[5])
  return templates[template].format(obj0=phrases[0], obj1=phrases[1], rel=rel), template


def caption_for(scene, rng: Union[None, int, np.random.Generator] = None) -> str:
  """An English caption for `scene`, e.g. "a tiny red circle in the top left corner".

  Args:
    scene: a Scene, or anything with `.objects` and `.relation` (an Example).
    rng: a numpy Generator or an int seed to draw the template and synonyms;
      None gives the canonical caption (first template, first synonyms), the
      one to use as a fixed prompt.

  Returns:
    The caption, lower case, no final full stop.
  """
  if not isinstance(scene, Scene):
    scene = Scene(tuple(scene.objects), scene.relation)
  if rng is None:
    return caption_from_uniforms(scene, None)[0]
  return caption_from_uniforms(scene, np.random.default_rng(rng).random(NUM_CAPTION_UNIFORMS))[0]
