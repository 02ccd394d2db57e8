@version 0.1.0
# Test-only schema: every type the syntax has, and a small service for the RPC tests.

enum Color
  red
  green
  blue

struct Point
  x  Float64
  y  Float32

# Recursion through a List is allowed: the default value is an empty list.
struct Tree
  label     Text
  children  List(Tree)

union Shape
  point  Point
  label  Text
  tree   Tree
  many   List(Shape)

struct Everything
  flag    Bool
  i8      Int8
  i16     Int16
  i32     Int32
  i64     Int64
  u8      UInt8
  u16     UInt16
  u32     UInt32
  u64     UInt64
  f32     Float32
  f64     Float64
  text    Text
  data    Data
  bytes   Bytes
  color   Color
  point   Point
  points  List(Point)
  matrix  List(List(Int32))
  colors  List(Color)
  shape   Shape
  shapes  List(Shape)
  tree    Tree

interface Echo
  echo (text Text) -> (text Text)
  roundTrip (value Everything) -> (value Everything)
  whoami () -> (org Text, user Text, email Text, roles List(Text), isAdmin Bool, requestId Text)
  fail (code Text, message Text) -> ()
  sleep (ms UInt32) -> (slept Bool)
  blob (size UInt32) -> (data Data)
